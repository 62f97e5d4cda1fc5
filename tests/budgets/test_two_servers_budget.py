"""A hard scoped budget across processes: two real `billing serve` processes on one
PostgreSQL database (and on one SQLite file), 200 concurrent reservations of 1 unit in the
budget's scope (100 sent to each server) against a hard budget of 100 units of the team's
requests: exactly 100 granted, the rest denied ``budget_exceeded``, exactly 100 units held.
Then half the grants are committed through the other server with events that leave the
scope out (the commit fills it from the budgets the hold counted against): the budget
still counts exactly 100, and a check through either server is denied; a call of another
team is not limited by it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from billing.api.auth import create_key
from billing.budgets.service import Budgets
from billing.catalog import Catalog
from billing.ledger.accounts import Accounts
from tests.support.db import engine_for_url, postgres_database, postgres_server_url, sqlite_database
from tests.support.guards import COST_RACE_PLAN

N_REQUESTS = 200
LIMIT = 100
SCOPE = {"team": "research", "user": "u-1"}


def _live_units_held(engine, customer: str) -> tuple[int, int]:
    """(number of live holds, live units held) of ``customer`` straight from the table."""
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    ph = "%s" if engine.dialect.name == "postgresql" else "?"
    with engine.connect() as conn:
        n, units = conn.exec_driver_sql(
            f"SELECT COUNT(*), COALESCE(SUM(units_micro), 0) FROM quota_hold "
            f"WHERE customer_id = {ph} AND status = 'held' AND expires_at > {ph}", (customer, now_us)).one()
    return int(n), int(units) // 1_000_000


def _race(url: str, tmp_path: Path) -> None:
    plans_dir = tmp_path / "plans"
    plans_dir.mkdir()
    (plans_dir / "cost-capped.yaml").write_text(COST_RACE_PLAN)  # no unit limit: the budget is the limit
    catalog = Catalog.from_paths(plans_dir)
    from tests.support.live_server import serve_side_by_side

    with engine_for_url(url) as engine:
        start = datetime.now(UTC) - timedelta(days=1)
        acc = Accounts(engine, catalog)
        acc.create_customer("acme", now=start)
        acc.subscribe("acme", "cost-capped", at=start, seats=1)
        Budgets(engine, catalog).create("acme", {
            "name": "research-requests", "measure": "units", "meter": "requests", "amount": str(LIMIT),
            "window": "daily", "enforcement": "hard", "scope": {"property": "team", "value": "research"}})
        _, key = create_key(engine, "check", customer="acme", name="race")

        with ExitStack() as stack:
            servers, clients = serve_side_by_side(stack, url, plans_dir, tmp_path, key)
            barrier = threading.Barrier(32)

            def one(i: int) -> tuple[int, dict]:
                if i < 32:
                    barrier.wait(30)  # the first wave leaves together
                body = {"customer": "acme", "meter": "requests", "quantity": 1, "ttl_seconds": 3600,
                        "request_id": f"race-{i}", "properties": SCOPE}
                r = clients[i % 2].post("/v1/quota/reserve", json=body)
                return r.status_code, r.json()

            with ThreadPoolExecutor(max_workers=32) as pool:
                results = list(pool.map(one, range(N_REQUESTS)))
            assert {s for s, _ in results} == {200}, [r for r in results if r[0] != 200][:5]
            granted = [(i, b) for i, (_, b) in enumerate(results) if b["granted"]]
            denied = [b for _, b in results if not b["granted"]]
            assert len(granted) == LIMIT, f"{len(granted)} granted of {N_REQUESTS}"
            assert all(b["decision"]["reason"] == "budget_exceeded" for b in denied)
            assert all(n > 0 for n in [sum(1 for i, _ in granted if i % 2 == s) for s in (0, 1)])
            assert _live_units_held(engine, "acme") == (LIMIT, LIMIT)

            # commits through the other server, events without the scope: counted where held
            def commit(item: tuple[int, dict]) -> int:
                i, b = item
                event = {"type": "request", "properties": {"note": "no scope given"}}
                return clients[(i + 1) % 2].post("/v1/quota/commit", json={
                    "reservation_id": b["reservation_id"], "event": event}).status_code

            with ThreadPoolExecutor(max_workers=16) as pool:
                assert set(pool.map(commit, granted[:LIMIT // 2])) == {200}
            assert _live_units_held(engine, "acme") == (LIMIT // 2, LIMIT // 2)
            for client in clients:
                d = client.post("/v1/quota/check", json={"customer": "acme", "meter": "requests",
                                                         "properties": SCOPE}).json()
                assert (d["outcome"], d["reason"]) == ("deny", "budget_exceeded"), d
                assert (d["budget"]["name"], d["budget"]["used"]) == ("research-requests", str(LIMIT)), d
                d = client.post("/v1/quota/check", json={"customer": "acme", "meter": "requests",
                                                         "properties": {"team": "ops"}}).json()
                assert d["outcome"] == "allow", d
            with engine.connect() as conn:
                teams = conn.exec_driver_sql("SELECT properties FROM usage_event WHERE customer_id = 'acme'").all()
            import json

            props = [json.loads(p) if isinstance(p, str) else p for (p,) in teams]
            assert len(props) == LIMIT // 2 and all(p["team"] == "research" for p in props)
            for proc, _, log_path in servers:
                assert proc.poll() is None, log_path.read_text(errors="replace")


@pytest.mark.slow
def test_two_servers_never_pass_a_hard_budget_postgres(tmp_path):
    with postgres_database(postgres_server_url()) as url:
        _race(url, tmp_path)


@pytest.mark.slow
def test_two_servers_never_pass_a_hard_budget_sqlite(tmp_path):
    with sqlite_database(tmp_path) as url:
        _race(url, tmp_path)
