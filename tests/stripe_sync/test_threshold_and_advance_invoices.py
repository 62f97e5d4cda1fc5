"""Threshold invoices, the closing invoice that takes their amounts back, and advance-billed
invoices (an opening invoice; an invoice holding one window's arrears and the next one's
advance fees) are pushed to Stripe like any other: one Stripe invoice each, our lines and
totals, and reconcile finds nothing."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

try:
    import localstripe  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        pytest.fail("localstripe is required when CI is set (install the `test` extra)", pytrace=False)
    pytest.skip("localstripe is not installed", allow_module_level=True)

from sqlmodel import Session, select

from billing.store.models import Invoice, InvoiceLineRow
from billing.stripe_sync.client import Retrier, client_for, list_all
from billing.stripe_sync.sync import META_INVOICE, META_LINE, StripeSync
from tests.support.db import World, shipped_catalog
from tests.support.stripe_server import LocalStripe, make_db

KEY = "sk_test_localstripe_secret_123"


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


def d(month: int, day: int) -> datetime:
    return datetime(2026, month, day, tzinfo=UTC)


def call(i: int, at: datetime) -> dict:
    return {"id": f"c{i}", "customer": "acme", "type": "llm.call", "timestamp": at.isoformat(),
            "properties": {"model": "claude-sonnet-4-5", "input_tokens": 1_000_000, "output_tokens": 200_000}}


def test_threshold_and_advance_invoices_are_pushed_like_any_other(tmp_path, stripe_env):
    _, engine = make_db(tmp_path)
    world = World(engine, shipped_catalog(), d(10, 1))
    world.accounts.create_customer("acme", now=world.now)
    world.accounts.subscribe("acme", "api-threshold", at=world.now)
    world.accounts.create_customer("team", now=world.now)
    world.accounts.subscribe("team", "team-advance", at=world.now, seats=3)
    world.at(d(10, 6))
    world.record(call(i, d(10, 2 + i)) for i in range(4))
    world.invoicing.close(world.now)  # acme's threshold invoice (24.00), team's opening invoice (110.00)
    world.accounts.change_seats("team", 4, at=d(10, 16))
    world.at(d(10, 20))
    world.record([call(9, d(10, 19))])
    world.at(d(11, 1))
    # acme's closing invoice (30.00 - 24.00); team's: 15.48 for the seat added, 140.00 for November
    world.invoicing.close(world.now)
    with Session(engine) as s:
        ours = {i.id: i for i in s.exec(select(Invoice)).all()}
        lines = list(s.exec(select(InvoiceLineRow)).all())
    assert sorted((i.customer_id, i.dedupe_key.split(":")[0], i.total_minor) for i in ours.values()) == [
        ("acme", "inv", 600), ("acme", "thr", 2400), ("team", "adv", 11_000), ("team", "inv", 15_548)]

    sync = StripeSync(engine, client_for(KEY, stripe_env.url, timeout=5.0), clock=lambda: d(11, 2),
                      retrier=Retrier(attempts=3, base_delay=0.01))
    result = sync.push()
    assert result.ok and sorted(o.action for o in result.outcomes) == ["pushed"] * 4, result.to_json()
    direct = client_for(KEY, stripe_env.url, timeout=5.0)
    theirs = {int(si["metadata"][META_INVOICE]): si for si in list_all(direct.v1.invoices.list)}
    assert set(theirs) == set(ours)
    for invoice_id, si in theirs.items():
        assert si["total"] == ours[invoice_id].total_minor
        got = sorted((int(sl["metadata"][META_LINE]), sl["amount"])
                     for sl in list_all(lambda p: direct.v1.invoices.line_items.list(si["id"], params=p)))
        assert got == sorted((ln.id, ln.amount_minor) for ln in lines if ln.invoice_id == invoice_id)
    assert sync.reconcile() == []
    engine.dispose()
