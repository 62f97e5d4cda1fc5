"""The global lock order on PostgreSQL (events, then counters, then agent task usage) holds
for every writer, not only for ``Ledger.record``: a quota commit and an ingestion chunk that
touch the same counter and the same task never wait for each other in a cycle.

The interleaving is forced, not hoped for: a third session holds the commit's quota hold
row, so the commit stops in the middle of its one statement (after whatever it locks
before the hold), then an ingestion chunk of the same customer and task runs into it."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from billing.ledger.holds import Quota
from billing.ledger.ingest import Ledger
from billing.ledger.quota_writer import QuotaWriter
from conftest_db import db_url, engine  # noqa: F401  (fixtures)
from test_ledger_concurrency import CATALOG, _event, _setup, assert_derived_equal_recount, task_rows

NOW = datetime(2026, 10, 20, tzinfo=UTC)


def _lock_waiters(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'").scalar_one()


def _wait_for_waiters(engine, n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while _lock_waiters(engine) < n:
        assert time.monotonic() < deadline, f"fewer than {n} sessions waiting for a lock"
        time.sleep(0.05)


def test_a_quota_commit_and_an_ingestion_chunk_take_locks_in_one_order(engine, monkeypatch):  # noqa: F811
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer: no row locks to order")
    _setup(engine)
    ledger = Ledger(engine, CATALOG, clock=lambda: NOW, alerts=False)
    quota = Quota(engine, CATALOG, clock=lambda: NOW, alerts=False)
    try:
        ledger.record([_event("acme", "warm", 1, task="t")])  # the counter and task rows exist
        hold = quota.reserve("acme", "llm_calls", task="t")
        assert hold.granted

        aborted: list[BaseException] = []  # transactions the database aborted (deadlock victims)
        real_retryable = ledger.retry.retryable

        def ledger_retryable(exc, attempt):
            aborted.append(exc)
            return real_retryable(exc, attempt)

        def quota_retryable(exc):
            aborted.append(exc)
            return getattr(getattr(exc, "diag", None), "sqlstate", None) in ("40P01", "40001")

        monkeypatch.setattr(ledger.retry, "retryable", ledger_retryable)
        monkeypatch.setattr(QuotaWriter, "_retryable", staticmethod(quota_retryable))

        blocker = engine.raw_connection()
        results: dict[str, object] = {}
        try:
            cur = blocker.cursor()
            cur.execute("SELECT 1 FROM quota_hold WHERE id = %s FOR UPDATE", (hold.id,))

            def commit() -> None:
                results["commit"] = quota.commit(hold.id, _event("acme", "q1", 2, task="t"))

            def ingest() -> None:
                results["ingest"] = ledger.record([_event("acme", "i1", 3, task="t")]).to_json()

            committer = threading.Thread(target=commit)
            committer.start()
            _wait_for_waiters(engine, 1)  # the commit waits for its hold row
            ingester = threading.Thread(target=ingest)
            ingester.start()
            _wait_for_waiters(engine, 2)  # the chunk waits for a row the commit holds
            blocker.rollback()
        finally:
            blocker.close()
        committer.join(60)
        ingester.join(60)
        assert results["commit"]["event"] == "accepted" and results["ingest"]["accepted"] == 1, results
        assert not aborted, f"a deadlock: {aborted[0]}"
        assert task_rows(engine)[("acme", "t")][0] == 3
        assert_derived_equal_recount(engine)
    finally:
        quota.close()
        ledger.close()
