"""The concurrency promise across processes: two real `billing serve` processes on one
database, 200 concurrent 1-unit reservations (100 sent to each server) against a limit of
100 units: exactly 100 are granted and the database holds exactly 100 live units. The same
race against a provider-cost cap (issue 15's cost guard: 200 calls of estimated cost 0.25
against a cap of 25): exactly 100 granted, exactly 25 of cost held, never more.

PostgreSQL runs on a fresh database (``tests.support.db.postgres_database``: skipped without
``BILLING_TEST_POSTGRES_URL``, failed when ``BILLING_REQUIRE_POSTGRES=1``); SQLite runs
both servers on one file.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from billing.api.auth import create_key
from billing.catalog import Catalog
from billing.ledger.accounts import Accounts
from tests.support.db import engine_for_url, postgres_database, postgres_server_url, sqlite_database
from tests.support.guards import COST_CAP, COST_RACE_PLAN
from tests.support.quota import BLOCK_PLAN
from tests.support.live_server import serve_side_by_side

N_REQUESTS = 200
LIMIT = 100


def _live_units_held(engine, customer: str) -> tuple[int, int]:
    """(number of live holds, live units held) of ``customer`` straight from the table."""
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    ph = "%s" if engine.dialect.name == "postgresql" else "?"
    with engine.connect() as conn:
        n, units = conn.exec_driver_sql(
            f"SELECT COUNT(*), COALESCE(SUM(units_micro), 0) FROM quota_hold "
            f"WHERE customer_id = {ph} AND status = 'held' AND expires_at > {ph}", (customer, now_us)).one()
    return int(n), int(units) // 1_000_000


def _live_cost_held(engine, customer: str) -> Decimal:
    """The estimated provider cost the live holds of ``customer`` hold, from the table."""
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    ph = "%s" if engine.dialect.name == "postgresql" else "?"
    with engine.connect() as conn:
        pico = conn.exec_driver_sql(
            f"SELECT COALESCE(SUM(cost_pico), 0) FROM quota_hold "
            f"WHERE customer_id = {ph} AND status = 'held' AND expires_at > {ph}", (customer, now_us)).scalar()
    return Decimal(int(pico)) / Decimal(10) ** 12


def _race_two_servers(url: str, tmp_path: Path, plan: tuple[str, str] = ("blocky", BLOCK_PLAN),
                      extra: dict | None = None) -> None:
    """The race on ``plan`` (name, text; the default: requests, 100 included, then block),
    each reservation's body with ``extra``."""
    plans_dir = tmp_path / "plans"
    plans_dir.mkdir()
    (plans_dir / f"{plan[0]}.yaml").write_text(plan[1])
    catalog = Catalog.from_paths(plans_dir)

    with engine_for_url(url) as engine:
        start = datetime.now(UTC) - timedelta(days=1)
        acc = Accounts(engine, catalog)
        acc.create_customer("acme", now=start)
        acc.subscribe("acme", plan[0], at=start, seats=1)
        _, key = create_key(engine, "check", customer="acme", name="race")

        with ExitStack() as stack:
            servers, clients = serve_side_by_side(stack, url, plans_dir, tmp_path, key)
            barrier = threading.Barrier(32)

            def one(i: int) -> tuple[int, dict]:
                if i < 32:
                    barrier.wait(30)  # the first wave leaves together
                body = {"customer": "acme", "meter": "requests", "quantity": 1, "ttl_seconds": 3600,
                        "request_id": f"race-{i}", **(extra or {})}
                r = clients[i % 2].post("/v1/quota/reserve", json=body)
                return r.status_code, r.json()

            with ThreadPoolExecutor(max_workers=32) as pool:
                results = list(pool.map(one, range(N_REQUESTS)))

            statuses = [s for s, _ in results]
            assert set(statuses) == {200}, [r for r in results if r[0] != 200][:5]
            granted = [b for _, b in results if b["granted"]]
            denied = [b for _, b in results if not b["granted"]]
            assert len(granted) == LIMIT, f"{len(granted)} granted of {N_REQUESTS}"
            assert len({b["reservation_id"] for b in granted}) == LIMIT
            assert not any(b["replayed"] for _, b in results)
            assert all(b["status"] == "held" and b["decision"]["outcome"] != "deny" for b in granted)
            assert all(b["reservation_id"] is None and b["decision"]["outcome"] == "deny" for b in denied)
            # both servers did grant (the race really spanned the two processes)
            by_server = [sum(1 for i, (_, b) in enumerate(results) if i % 2 == s and b["granted"])
                         for s in (0, 1)]
            assert all(n > 0 for n in by_server), by_server
            for proc, base, log_path in servers:
                assert proc.poll() is None, log_path.read_text(errors="replace")

        assert _live_units_held(engine, "acme") == (LIMIT, LIMIT)
        if extra is not None:  # the cost race: the cap held exactly, never passed
            assert _live_cost_held(engine, "acme") == COST_CAP
            assert all(b["decision"]["guard"] == "cost_cap" for _, b in results if not b["granted"])


@pytest.mark.slow
def test_two_servers_never_exceed_the_limit_postgres(tmp_path):
    with postgres_database(postgres_server_url()) as url:
        _race_two_servers(url, tmp_path)


@pytest.mark.slow
def test_two_servers_never_exceed_the_limit_sqlite(tmp_path):
    with sqlite_database(tmp_path) as url:
        _race_two_servers(url, tmp_path)


COST_RACE = (("cost-capped", COST_RACE_PLAN), {"cost": str(Decimal(COST_CAP) / LIMIT)})


@pytest.mark.slow
def test_two_servers_never_exceed_a_cost_cap_postgres(tmp_path):
    with postgres_database(postgres_server_url()) as url:
        _race_two_servers(url, tmp_path, *COST_RACE)


@pytest.mark.slow
def test_two_servers_never_exceed_a_cost_cap_sqlite(tmp_path):
    with sqlite_database(tmp_path) as url:
        _race_two_servers(url, tmp_path, *COST_RACE)
