"""The worker's stripe_sync job against the Stripe test server: the invoices its close job
finalized are pushed once (a second run finds them already there), and a worker with no
Stripe key leaves the job out."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

try:
    import localstripe  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        pytest.fail("localstripe is required when CI is set (install the `test` extra)", pytrace=False)
    pytest.skip("localstripe is not installed", allow_module_level=True)

from billing.config import Settings
from billing.stripe_sync.client import client_for, list_all
from billing.stripe_sync.sync import META_INVOICE
from billing.worker.jobs import JobContext
from billing.worker.runner import Worker
from billing.worker.schedule import DEFAULT_INTERVALS
from tests.support.close_scenario import CATALOG
from tests.support.stripe_server import LocalStripe, make_db
from tests.support.worker import due_ledger, invoice_keys

KEY = "sk_test_localstripe_secret_123"
NOW = datetime(2026, 11, 2, tzinfo=UTC)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ls = LocalStripe(tmp_path_factory.mktemp("localstripe")).start()
    yield ls
    ls.stop()


@pytest.fixture
def stripe_env(server):
    if not server.running():
        server.start()
    server.reset()
    return server


def test_the_close_then_the_stripe_sync_push_each_invoice_once(tmp_path, stripe_env):
    _, engine = make_db(tmp_path)
    due_ledger(engine, 2, NOW - timedelta(days=32), now=NOW)  # October 1 to now: October is due
    settings = Settings(stripe_api_key=KEY, stripe_api_base=stripe_env.url)
    records: list[dict] = []
    ctx = JobContext(engine, CATALOG, settings, clock=lambda: NOW)
    worker = Worker(ctx, ["close", "stripe_sync"], DEFAULT_INTERVALS, emit=records.append)
    worker.run_once()
    worker.run_once()
    assert [(r["job"], r["status"]) for r in records] == [("close", "ok"), ("stripe_sync", "ok")] * 2, records
    assert records[0]["result"]["invoices"] == 2 and records[2]["result"]["invoices"] == 0
    assert records[1]["result"] == {"ok": True, "pushed": 2}
    assert records[3]["result"]["ok"] is True and "pushed" not in records[3]["result"]
    theirs = list(list_all(client_for(KEY, stripe_env.url, timeout=5.0).v1.invoices.list))
    assert len(theirs) == len(invoice_keys(engine)) == 2
    assert len({si["metadata"][META_INVOICE] for si in theirs}) == 2
    ctx.close()
    engine.dispose()
