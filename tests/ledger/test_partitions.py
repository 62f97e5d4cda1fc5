"""A ledger that keeps growing (issue 17, item 2): ``usage_event`` partitioned by month on
PostgreSQL with idempotency across months, partitions created on demand (two writers at
once) and ahead of time (the worker's job), timestamps outside the range rejected alone.
SQLite (one table) answers the same."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from billing.ledger.ingest import Ledger
from billing.store import partitions
from billing.store.db import engine_for
from tests.support.ledger import CATALOG, _setup, assert_derived_equal_recount

NOW = datetime(2026, 11, 15, tzinfo=UTC)


def ev(customer: str, event_id: str, timestamp: str, tokens: int = 100) -> dict:
    return {"id": event_id, "customer": customer, "type": "llm.call", "timestamp": timestamp,
            "properties": {"model": "claude-sonnet-4-5", "input_tokens": tokens, "output_tokens": 7}}


def stored(engine, customer: str, event_id: str) -> list[tuple]:
    with engine.connect() as conn:
        ph = "%s" if engine.dialect.name == "postgresql" else "?"
        return conn.exec_driver_sql(f"SELECT ts FROM usage_event WHERE customer_id = {ph} AND event_id = {ph}",
                                    (customer, event_id)).all()


def months(engine) -> set[str]:
    with engine.connect() as conn:
        return {partitions.month_name(m) for m in partitions.existing_months(partitions.sql_runner(conn))}


def test_the_events_table_is_partitioned_on_postgres_only(engine):
    with engine.connect() as conn:
        names = set(conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'").scalars()) \
            if engine.dialect.name == "sqlite" else set()
    assert not {n for n in names if n.startswith("usage_event_")}  # SQLite: one table, no key table
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            assert partitions.is_partitioned(partitions.sql_runner(conn))
            assert conn.exec_driver_sql("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                        "WHERE conname = 'usage_event_pkey'").scalar() == \
                "PRIMARY KEY (id, ts, customer_id)"


@pytest.mark.parametrize("size", [1, 700])  # the small-batch path and the COPY path (PostgreSQL)
def test_the_same_id_in_another_month_is_a_conflict(engine, size):
    """A unique index of a partitioned table must hold the partition key, so (customer, id)
    alone is not one there: the same id with a time in another month must still be caught."""
    _setup(engine)
    ledger = Ledger(engine, CATALOG, clock=lambda: NOW, alerts=False)
    first = ev("acme", "x1", "2026-10-05T00:00:00Z")
    assert ledger.record([first]).accepted == 1
    moved = {**first, "timestamp": "2026-11-05T00:00:00Z"}
    others = [ev("acme", f"n{i}", "2026-11-06T00:00:00Z") for i in range(size)]
    result = ledger.record([moved, *others])
    assert [r.status for r in result.results] == ["conflict"] + ["accepted"] * size
    assert result.results[0].code == "event_conflict"
    back = ledger.record([first, {**moved, "id": "x1", "timestamp": "2025-02-01T00:00:00Z"}])  # a third month
    assert [r.status for r in back.results] == ["duplicate", "conflict"]
    assert stored(engine, "acme", "x1") == [(1791158400000000,)]  # the first one's time, once
    assert_derived_equal_recount(engine)


def test_a_backdated_event_gets_its_month_and_a_bad_timestamp_is_its_own_rejection(engine):
    _setup(engine)
    ledger = Ledger(engine, CATALOG, clock=lambda: NOW, alerts=False)
    batch = [ev("acme", "old", "2024-03-10T00:00:00Z"), ev("acme", "y2k", "2000-01-01T00:00:00Z"),
             ev("acme", "before", "1999-12-31T23:59:59Z"), ev("acme", "far", "2100-01-01T00:00:00Z"),
             ev("acme", "now", "2026-11-14T00:00:00Z")]
    result = ledger.record(batch)
    assert [(r.status, r.code if r.status == "rejected" else None) for r in result.results] == [
        ("accepted", None), ("accepted", None), ("rejected", "bad_timestamp"), ("rejected", "bad_timestamp"),
        ("accepted", None)]
    if engine.dialect.name == "postgresql":
        assert {"2024-03", "2000-01", "2026-11"} <= months(engine)
        assert "1999-12" not in months(engine)
    assert len(stored(engine, "acme", "old")) == 1
    # the same events again, through the COPY path: duplicates, the months already there
    again = ledger.record(batch * 1 + [ev("acme", f"b{i}", "2023-07-01T00:00:00Z") for i in range(600)])
    assert again.count("duplicate") == 3 and again.accepted == 600 and again.count("rejected") == 2


def test_a_partition_created_in_a_rolled_back_chunk_is_created_again(engine, monkeypatch):
    """The ledger caches the months it saw committed only: a chunk aborted (a deadlock
    victim) after it created a month's partition runs again and creates it again."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no partitions")
    _setup(engine)
    from billing.store import event_store

    real, calls = event_store.upsert_counters, {"n": 0}

    class Deadlock(Exception):
        sqlstate = "40P01"

    def failing_once(conn, deltas):
        calls["n"] += 1
        real(conn, deltas)
        if calls["n"] == 1:
            raise Deadlock("deadlock detected")

    monkeypatch.setattr(event_store, "upsert_counters", failing_once)
    ledger = Ledger(engine, CATALOG, clock=lambda: NOW, alerts=False)
    assert ledger.record([ev("acme", "r1", "2022-05-05T00:00:00Z")]).accepted == 1
    assert calls["n"] == 2 and "2022-05" in months(engine)


@pytest.mark.postgres
def test_two_ingesters_create_the_same_month_at_once(db_url):
    """Two writers whose chunks both need a month without a partition (and share some event
    ids): each waits for the other's creation, none fails, every event is stored once."""
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL: partitions")
    engine = engine_for(db_url)
    _setup(engine)
    for round_, (month, size) in enumerate([("2025-03", 5), ("2025-04", 600), ("2025-05", 600)]):
        ledgers = [Ledger(engine, CATALOG, clock=lambda: NOW, alerts=False) for _ in range(2)]
        shared = [ev("acme", f"s{round_}-{i}", f"{month}-02T00:00:00Z") for i in range(50)]
        batches = [[ev("acme", f"{w}{round_}-{i}", f"{month}-01T00:00:00Z") for i in range(size)] + shared
                   for w in "ab"]
        barrier, results, errors = threading.Barrier(2), {}, []

        def go(n: int) -> None:
            try:
                barrier.wait()
                results[n] = ledgers[n].record(batches[n])
            except Exception as exc:  # noqa: BLE001 - the assertion shows it
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(n,)) for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert results[0].accepted + results[1].accepted == 2 * size + 50
        assert results[0].count("duplicate") + results[1].count("duplicate") == 50
        assert month in months(engine)
        for ledger in ledgers:
            ledger.close()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM usage_event").scalar() == 5 * 2 + 600 * 4 + 150
    assert_derived_equal_recount(engine)


def test_the_worker_job_creates_the_months_ahead(engine):
    from billing.store.partitions import ensure_ahead

    first = ensure_ahead(engine, datetime(2027, 5, 20, tzinfo=UTC))
    if engine.dialect.name != "postgresql":
        assert first == {"partitioned": False, "created": []}
        return
    assert first["created"] == ["2027-04", "2027-05", "2027-06", "2027-07", "2027-08"]
    assert ensure_ahead(engine, datetime(2027, 5, 20, tzinfo=UTC))["created"] == []  # idempotent
    assert {"2027-04", "2027-08"} <= months(engine)
