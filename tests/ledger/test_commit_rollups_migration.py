"""Migration 0023: a database whose quota commits stored events the hourly rollups lack (the
commit door added no rollups before this version) gets ``rollups_stale``, so the reports read
the events until ``billing db recount``; a database whose rollups hold every event does not."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from billing.store import rollup_sql
from billing.store.db import upgrade
from tests.support.db import engine_for_url
from tests.support.ledger import CATALOG

OCT = datetime(2026, 10, 1, tzinfo=UTC)


def _seed(url: str) -> None:
    with engine_for_url(url) as engine:
        Accounts(engine, CATALOG).create_customer("acme", now=OCT)
        Ledger(engine, CATALOG, clock=lambda: datetime(2026, 10, 20, tzinfo=UTC)).record(
            [{"id": str(i), "customer": "acme", "type": "llm.call", "timestamp": f"2026-10-0{i}T10:00:00Z",
              "properties": {"model": "gpt-5-mini", "input_tokens": 10 * i}} for i in range(1, 4)])


def _stale(url: str) -> bool:
    with engine_for_url(url) as engine, engine.connect() as conn:
        return rollup_sql.stale(conn)


def test_rollups_missing_events_are_flagged_stale(empty_db_url):
    upgrade(empty_db_url, "0022_probe_budget_autoincrement")
    _seed(empty_db_url)
    with engine_for_url(empty_db_url) as engine, engine.begin() as conn:  # as a commit's event was: no rollup
        conn.execute(text("UPDATE usage_rollup SET events = events - 1 WHERE hour = "
                          "(SELECT MIN(hour) FROM usage_rollup)"))
    assert not _stale(empty_db_url)
    upgrade(empty_db_url)
    assert _stale(empty_db_url)


def test_complete_rollups_stay_fresh(empty_db_url):
    upgrade(empty_db_url, "0022_probe_budget_autoincrement")
    _seed(empty_db_url)
    upgrade(empty_db_url)
    assert not _stale(empty_db_url)
