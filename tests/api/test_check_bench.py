"""bench/check.py (issue 17) at a tiny size: the one-customer and the spread checks over
HTTP in one run, on both databases, and the customers it copies past the first 100 decide
like the ones ``Accounts`` made. Its targets are measured at --customers 100000 (README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.db import PLANS_DIR, postgres_server_url

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.check import customer_id, seed  # noqa: E402
from bench.common import fresh_database  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_check_benchmark_spreads_over_the_customers(backend):
    if backend == "postgres":
        postgres_server_url()  # skipped without PostgreSQL, failed when it is required
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "check.py"), "--backend", backend, "--customers", "60",
                          "--library-seeded", "5", "--seconds", "1", "--concurrency", "4"],
                         capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, BILLING_PLANS_DIR=str(PLANS_DIR)))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["customers"] == 60
    assert result["check_rps"] > 0 and result["spread_rps"] > 0 and result["floor_rps"] > 0
    assert result["check_errors"] == result["spread_errors"] == result["floor_errors"] == 0
    assert result["spread_ratio"] == round(result["spread_rps"] / result["check_rps"], 3)
    assert {"spread_ratio>=0.7", "spread_p99<=10ms"} <= set(result["targets"])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_copied_customers_decide_like_the_ones_accounts_made(backend):
    """Past the customers ``Accounts`` set up (``LIBRARY_SEEDED`` in the benchmark) the seed
    copies the first one's rows: a copy has the same plan, period and seats, and the same
    answer to the same question."""
    if backend == "postgres":
        postgres_server_url()
    from billing.catalog import Catalog
    from billing.reservations.holds import Quota
    from billing.store.db import make_engine

    library, n = 3, 6
    now = datetime.now(UTC)
    with fresh_database(backend) as url:
        seed(url, n, now, library=library)
        engine = make_engine(url)
        quota = Quota(engine, Catalog.from_paths(PLANS_DIR))
        try:
            made, copied = customer_id(0, n), customer_id(library, n)  # both with no events (3 % 3)
            with quota.conns.read() as conn:
                a, b = quota.context(conn, made, now), quota.context(conn, copied, now)
            assert (a.plan.ref, a.period, a.seats, a.credits) == (b.plan.ref, b.period, b.seats, b.credits)
            assert a.subscription_id != b.subscription_id
            answers = [quota.check(c, "messages").to_json() for c in (made, copied)]
            assert answers[0] == answers[1] and answers[0]["allowed"]
        finally:
            quota.close()
            engine.dispose()
