"""Ingestion under concurrency (SQLite and PostgreSQL): crossed batches never deadlock into an
error, concurrent imports of overlapping files both complete, every event is stored once and
the counters and agent task usage equal a recount of the events."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime

import pytest

from billing.ledger.ingest import Ledger
from tests.support.ledger import CATALOG, _cli_env, _event, _setup, assert_derived_equal_recount, task_rows

NOW = datetime(2026, 10, 20, tzinfo=UTC)


@pytest.mark.slow
@pytest.mark.parametrize("shared", [False, True], ids=["own-ids", "same-ids"])
def test_crossed_batches_complete_and_count_once(engine, shared):  # noqa: F811
    """Two writers sending batches in opposite orders ([A, B] against [B, A]) over two
    customers' shared counters, with their own event ids or the same ones: on PostgreSQL
    without the global lock order these deadlocked (the counters of A and B taken in opposite
    orders)."""
    _setup(engine)
    ledgers = [Ledger(engine, CATALOG, clock=lambda: NOW, alerts=False) for _ in range(2)]
    rounds = 120
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def writer(w: int) -> None:
        try:
            for r in range(rounds):
                prefix = f"r{r}" if shared else f"w{w}r{r}"
                batch = [_event(c, f"{prefix}-{c}-{k}", r, task=f"t{r % 3}") for c in ("acme", "beta") for k in range(3)]
                if w:
                    batch.reverse()
                barrier.wait(timeout=30)
                result = ledgers[w].record(batch)
                assert result.count("accepted") + result.count("duplicate") == len(batch), result.to_json()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT COUNT(*), COUNT(DISTINCT customer_id || '/' || event_id) "
                                      "FROM usage_event").one()
    n = rounds * 6 * (1 if shared else 2)
    assert tuple(stored) == (n, n)
    assert sum(s for s, _, _ in task_rows(engine).values()) == n
    assert_derived_equal_recount(engine)


@pytest.mark.slow
def test_concurrent_imports_of_overlapping_files_complete(db_url, engine, tmp_path):  # noqa: F811
    """Two `billing events import` processes at once, on files that share half their events
    (in opposite orders): both finish without a traceback, each event is stored once."""
    _setup(engine)
    events = [_event("acme" if i % 2 else "beta", f"e{i}", i, task=f"t{i % 5}") for i in range(6000)]
    first, second = events[:4000], list(reversed(events[2000:]))
    paths = []
    for name, part in (("a", first), ("b", second)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in part))
        paths.append(path)
    procs = [subprocess.Popen([sys.executable, "-m", "billing", "events", "import", str(p), "--json",
                               "--batch", "500"], env=_cli_env(db_url), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for p in paths]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    summaries = [json.loads(out) for out, _ in outs]
    assert sum(s["accepted"] for s in summaries) == len(events)
    assert sum(s["duplicates"] for s in summaries) == 2000
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM usage_event").scalar_one() == len(events)
    assert sum(s for s, _, _ in task_rows(engine).values()) == len(events)
    assert_derived_equal_recount(engine)


@pytest.mark.parametrize("size", [1, 700])  # the small-batch path and the COPY path (PostgreSQL)
def test_a_deadlock_in_a_chunk_is_retried(engine, size, monkeypatch):  # noqa: F811
    """The database aborting a chunk's transaction (a deadlock victim) runs the chunk again
    from the start: the caller sees ordinary results, nothing twice."""
    _setup(engine)
    from billing.store import event_store

    real = event_store.upsert_counters
    calls = {"n": 0}

    class Deadlock(Exception):
        sqlstate = "40P01"

    def failing_once(conn, deltas):
        calls["n"] += 1
        real(conn, deltas)  # written, then the transaction is aborted: all of it must roll back
        if calls["n"] == 1:
            raise Deadlock("deadlock detected")

    monkeypatch.setattr(event_store, "upsert_counters", failing_once)
    ledger = Ledger(engine, CATALOG, clock=lambda: NOW, alerts=False)
    events = [_event("acme", f"d{i}", i, task="t") for i in range(size)]
    result = ledger.record(events)
    assert result.accepted == size and calls["n"] == 2 and ledger.retry.retried == 1
    assert ledger.record(events).count("duplicate") == size
    assert task_rows(engine)[("acme", "t")][0] == size
    monkeypatch.setattr(event_store, "upsert_counters", real)
    assert_derived_equal_recount(engine)


def test_a_database_busy_past_the_retries_is_a_503_never_a_500(engine, monkeypatch):  # noqa: F811
    """When the database keeps aborting (deadlocks past every retry, a locked SQLite file) or
    cannot be reached, the API answers 503 ``service_unavailable`` with Retry-After: nothing
    was written, and the client knows to retry."""
    import sqlite3

    from fastapi.testclient import TestClient
    from sqlalchemy.exc import OperationalError

    from billing.api.app import create_app
    from billing.api.auth import create_key

    _setup(engine)
    app = create_app(engine, CATALOG, context_ttl=0, key_cache_ttl=0)
    key = create_key(engine, "admin")[1]
    headers = {"Authorization": f"Bearer {key}"}
    ledger = app.state.services.ledger
    monkeypatch.setattr(ledger.retry, "first_delay", 0.0001)
    client = TestClient(app, raise_server_exceptions=False)
    calls = {"n": 0}

    class Deadlock(Exception):
        sqlstate = "40P01"

    def always_deadlocked(_staged):
        calls["n"] += 1
        raise OperationalError("INSERT ...", {}, Deadlock("deadlock detected"))

    monkeypatch.setattr(ledger, "_store_once", always_deadlocked)
    r = client.post("/v1/events", json=[_event("acme", "x1", 1)], headers=headers)
    assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable", r.text
    assert r.headers["retry-after"] == "1" and calls["n"] == ledger.retry.max_attempts  # retried, then given up

    def locked(*_args, **_kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(app.state.services.quota, "check", locked)
    monkeypatch.setattr(app.state.services.quota, "check_batch", locked)
    if app.state.checks is not None:
        monkeypatch.setattr(app.state.checks, "ask", locked, raising=False)
    r = client.post("/v1/quota/check", json={"customer": "acme", "meter": "llm_calls"}, headers=headers)
    assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable", r.text
