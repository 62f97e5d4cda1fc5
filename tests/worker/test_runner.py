"""The worker's runner in process, on SQLite and PostgreSQL: jobs under their locks (a held
lock makes the run ``skipped``), the close as of ``now - grace``, one record per run, a
failing job that does not stop the others, the loop that stops between jobs."""

from __future__ import annotations

import fcntl
import threading
from datetime import UTC, datetime, timedelta

import pytest

from billing.config import Settings
from billing.worker import jobs as jobs_module
from billing.worker.jobs import JobContext, unavailable
from billing.worker.locks import lock_file, lock_key
from billing.worker.runner import Worker
from billing.worker.schedule import DEFAULT_INTERVALS, JOB_NAMES
from tests.support.close_scenario import CATALOG, assert_gap_free
from tests.support.worker import due_ledger, due_periods, invoice_keys, month_start

NOW = datetime(2026, 11, 1, 0, 30, tzinfo=UTC)
STARTED = month_start(NOW, back=2)  # September 1


def _worker(engine, names, records, *, now=NOW, grace=3600, **kw):
    ctx = JobContext(engine, CATALOG, Settings(close_grace_seconds=grace), clock=lambda: now, **kw)
    return ctx, Worker(ctx, names, DEFAULT_INTERVALS, emit=records.append)


def _hold_lock(engine, name):
    """Hold the job's lock from elsewhere: another PostgreSQL session, another open file."""
    if engine.dialect.name == "postgresql":
        conn = engine.connect()
        conn.exec_driver_sql("SELECT pg_advisory_lock(%s, %s)", lock_key(name))
        conn.commit()
        return lambda: (conn.exec_driver_sql("SELECT pg_advisory_unlock(%s, %s)", lock_key(name)), conn.close())
    handle = open(lock_file(engine, name), "a+b")
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    return handle.close


def test_close_respects_grace_and_is_idempotent(engine):
    ids = due_ledger(engine, 3, STARTED, now=NOW)
    records: list[dict] = []
    ctx, worker = _worker(engine, ["close"], records, grace=3600)  # October ended 30 minutes ago: not yet
    worker.run_once()
    assert records[-1]["status"] == "ok" and records[-1]["result"]["invoices"] == 3  # September only
    assert records[-1]["result"]["as_of"] == (NOW - timedelta(hours=1)).isoformat()
    assert {k[2] for k in invoice_keys(engine)} == {STARTED}
    ctx, worker = _worker(engine, ["close"], records, grace=600)  # 10 minutes: October is due
    worker.run_once()
    worker.run_once()
    assert [r["result"]["invoices"] for r in records[-2:]] == [3, 0]
    expected = sorted((c, i + 1, p) for i, c in enumerate(ids)
                      for p in due_periods(STARTED, NOW - timedelta(minutes=10)))
    assert invoice_keys(engine) == expected and len(expected) == 6
    assert_gap_free(engine)
    ctx.close()


def test_a_held_lock_makes_the_run_skipped(engine):
    due_ledger(engine, 2, STARTED, now=NOW)
    records: list[dict] = []
    ctx, worker = _worker(engine, ["close", "purge_holds"], records)
    release = _hold_lock(engine, "close")
    try:
        worker.run_once()
    finally:
        release()
    assert [(r["job"], r["status"]) for r in records] == [("close", "skipped"), ("purge_holds", "ok")]
    assert "another worker" in records[0]["reason"] and invoice_keys(engine) == []
    worker.run_once()  # released: this worker runs it now, and its own lock is released after
    assert records[-2]["status"] == "ok" and records[-2]["result"]["invoices"] == 2
    release = _hold_lock(engine, "close")  # would block forever if the worker still held it
    release()
    ctx.close()


def test_a_failing_job_is_reported_and_the_next_runs(engine, monkeypatch):
    def broken(ctx):
        raise RuntimeError("database went away\nsecond line")

    monkeypatch.setitem(jobs_module.JOBS, "close", broken)
    monkeypatch.setitem(jobs_module.JOBS, "outbox", lambda ctx: {"ok": False, "pushed": 1, "failed": 2})
    records: list[dict] = []
    ctx, worker = _worker(engine, ["close", "outbox", "purge_holds"], records)
    worker.run_once()
    assert records[0]["status"] == "error" and records[0]["error"] == "RuntimeError: database went away"
    assert records[1]["status"] == "error" and records[1]["result"] == {"ok": False, "pushed": 1, "failed": 2}
    assert records[2] == {**records[2], "job": "purge_holds", "status": "ok", "result": {"expired": 0}}
    assert all(isinstance(r["took_ms"], int) and r["took_ms"] >= 0 for r in records)
    ctx.close()


def test_the_loop_finishes_the_running_job_then_stops(engine):
    records: list[dict] = []
    stop = threading.Event()

    def emit(record):
        records.append(record)
        if len(records) == 5:
            stop.set()  # while the fifth run is being reported: nothing runs after it

    ctx = JobContext(engine, CATALOG, Settings(), clock=lambda: NOW)
    worker = Worker(ctx, ["close", "purge_holds"], {**DEFAULT_INTERVALS, "close": 0.01, "purge_holds": 0.01},
                    emit=emit)
    thread = threading.Thread(target=worker.run_forever, args=(stop,))
    thread.start()
    thread.join(60)
    assert not thread.is_alive() and len(records) == 5
    assert [r["job"] for r in records[:2]] == ["close", "purge_holds"]  # both due at the start, in run order
    assert {r["job"] for r in records[2:]} <= {"close", "purge_holds"} and {r["status"] for r in records} == {"ok"}
    ctx.close()


def test_jobs_that_need_settings_say_which(engine):
    ctx = JobContext(engine, CATALOG, Settings(stripe_api_key=None))
    assert unavailable(ctx, "outbox") is None  # endpoints live in the database; the URL is optional
    half = JobContext(engine, CATALOG, Settings(), webhook_url="http://127.0.0.1:9/h")
    assert "go together" in unavailable(half, "outbox")
    assert unavailable(ctx, "stripe_sync") == "needs BILLING_STRIPE_API_KEY"
    assert unavailable(ctx, "close") is None and unavailable(ctx, "purge_holds") is None
    ready = JobContext(engine, CATALOG, Settings(stripe_api_key="sk_test_x"), webhook_url="http://127.0.0.1:9/h",
                       webhook_secret="s")
    assert [n for n in JOB_NAMES if unavailable(ready, n)] == []


@pytest.mark.parametrize("grace", [-1, 31 * 86_400 + 1])
def test_grace_out_of_range_is_refused(grace):
    with pytest.raises(ValueError, match="close_grace_seconds"):
        Settings(close_grace_seconds=grace)
