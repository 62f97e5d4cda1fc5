"""`billing worker` as OS processes: two workers on one database (PostgreSQL, SQLite) close
a due period once (same invoices, gap-free numbers) and exit 0 on SIGTERM; a lock held elsewhere
makes the close skipped; the outbox is delivered with no server running; the grace holds
back a period that ended less than it ago; a worker killed -9 in the middle of its close
leaves nothing a second run doubles."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from billing.alerts.delivery import verify_signature
from billing.alerts.outbox import Outbox
from billing.cli import app
from billing.invoicing.repository import CLOSE_LOCK
from billing.store.db import make_engine
from billing.worker.locks import lock_key
from tests.support.close_scenario import assert_gap_free
from tests.support.db import BACKENDS, fresh_database
from tests.support.worker import (
    WebhookReceiver, WorkerProcess, advisory_lock_held, due_ledger, due_periods, invoice_keys, job_records,
    month_start, pg_conninfo, run_worker, worker_env)

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_url(tmp_path):
    with fresh_database("postgres", tmp_path) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path):
    with fresh_database("sqlite", tmp_path) as url:
        yield url


def _ledger(url: str, customers: int, back: int = 2) -> tuple[datetime, list[str]]:
    started = month_start(datetime.now(UTC), back=back)
    engine = make_engine(url)
    try:
        return started, due_ledger(engine, customers, started)
    finally:
        engine.dispose()


def _expected(ids: list[str], started: datetime, as_of: str) -> list[tuple]:
    periods = due_periods(started, datetime.fromisoformat(as_of))
    return sorted((c, i + 1, p) for i, c in enumerate(ids) for p in periods)


def _documents(url: str):
    engine = make_engine(url)
    try:
        keys = invoice_keys(engine)
        assert_gap_free(engine)
        return keys
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_workers_close_once_and_stop_on_sigterm(backend, tmp_path):
    """PostgreSQL: the advisory lock; SQLite: the lock file (and the close's own write lock)."""
    with fresh_database(backend, tmp_path) as url:
        _two_workers(url, tmp_path)


def _two_workers(url: str, tmp_path) -> None:
    started, ids = _ledger(url, 150)
    env = worker_env(url, tmp_path / "plans")
    workers = [WorkerProcess(env, "--jobs", "close", "--interval", "0.2") for _ in range(2)]
    try:
        for w in workers:
            w.wait_for(lambda lines: len(job_records(lines, "close")) >= 3)
    finally:
        codes = [w.terminate() for w in workers]
    assert codes == [0, 0]
    closes = [r for w in workers for r in job_records(w.lines, "close")]
    assert {r["status"] for r in closes} <= {"ok", "skipped"}, closes
    made = [r["result"]["invoices"] for r in closes if r["status"] == "ok"]
    assert sum(1 for n in made if n) == 1  # one run made the invoices; every other was skipped or found none
    expected = _expected(ids, started, next(r["result"]["as_of"] for r in closes if r["status"] == "ok"))
    assert len(expected) >= len(ids) and sum(made) == len(expected)
    assert _documents(url) == expected  # each period's invoice once, numbers without gaps
    for w in workers:
        assert w.lines[0]["worker"] == "started" and w.lines[-1] == {"worker": "stopped", "signal": True}


@pytest.mark.postgres
def test_a_lock_held_in_another_connection_makes_the_worker_skip(pg_url, tmp_path):
    import psycopg

    started, ids = _ledger(pg_url, 3)
    env = worker_env(pg_url, tmp_path / "plans")
    with psycopg.connect(pg_conninfo(pg_url), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", lock_key("close"))
        code, recs, err = run_worker(env, "--jobs", "close,purge_holds")
    assert code == 0, err
    assert [(r["job"], r["status"]) for r in recs if "job" in r] == [("close", "skipped"), ("purge_holds", "ok")]
    assert _documents(pg_url) == []
    code, recs, err = run_worker(env, "--jobs", "close")  # the other session ended: its lock went with it
    (close,) = job_records(recs, "close")
    assert code == 0 and close["status"] == "ok", err
    assert _documents(pg_url) == _expected(ids, started, close["result"]["as_of"])


def test_the_worker_delivers_the_outbox_without_the_server(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        for n in (1, 2):
            Outbox.enqueue(conn, f"d{n}", "acme", "budget.threshold_reached", {"n": n}, 0)
    with WebhookReceiver() as receiver:
        env = worker_env(sqlite_url, tmp_path / "plans", webhook_url=receiver.url, webhook_secret="s3cret")
        code, recs, err = run_worker(env, "--jobs", "outbox")
        again = run_worker(env, "--jobs", "outbox")
    assert code == 0, err
    assert job_records(recs, "outbox")[0]["result"] == {"events": 2, "delivered": 2, "retried": 0, "dead": 0,
                                                        "canceled": 0}
    assert job_records(again[1], "outbox")[0]["result"] == {"events": 0, "delivered": 0, "retried": 0, "dead": 0,
                                                            "canceled": 0}
    assert sorted(h["Billing-Webhook-Id"] for h, _ in receiver.received) == ["d1", "d2"]
    for headers, body in receiver.received:
        assert verify_signature("s3cret", body, headers["Billing-Signature"])
        assert json.loads(body)["n"] in (1, 2)
    assert [r["status"] for r in Outbox(engine).rows()] == ["dispatched", "dispatched"]
    engine.dispose()


def test_the_grace_holds_back_a_period_that_ended_less_than_it_ago(sqlite_url, tmp_path):
    started, ids = _ledger(sqlite_url, 2, back=1)  # last month: ended at this month's start
    since_end = (datetime.now(UTC) - month_start(datetime.now(UTC))).total_seconds()
    env = worker_env(sqlite_url, tmp_path / "plans", close_grace_seconds=str(int(since_end) + 3600))
    code, recs, err = run_worker(env, "--jobs", "close")
    assert code == 0 and job_records(recs, "close")[0]["result"]["invoices"] == 0, err
    assert _documents(sqlite_url) == []
    code, recs, err = run_worker({**env, "BILLING_CLOSE_GRACE_SECONDS": "0"}, "--jobs", "close")
    (close,) = job_records(recs, "close")
    assert code == 0 and close["result"]["invoices"] == 2, err
    assert _documents(sqlite_url) == _expected(ids, started, close["result"]["as_of"])


@pytest.mark.postgres
def test_a_worker_killed_mid_close_leaves_nothing_doubled(pg_url, tmp_path):
    started, ids = _ledger(pg_url, 400)
    env = worker_env(pg_url, tmp_path / "plans")
    first = WorkerProcess(env, "--jobs", "close", "--once")
    deadline = time.monotonic() + 90
    while not advisory_lock_held(pg_url, CLOSE_LOCK):  # the close's transaction has begun
        assert first.proc.poll() is None and time.monotonic() < deadline, first.poll_lines()
    first.kill()
    assert job_records(first.poll_lines(), "close") == []  # killed before its close finished
    while advisory_lock_held(pg_url, lock_key("close")) or advisory_lock_held(pg_url, CLOSE_LOCK):
        assert time.monotonic() < deadline  # the server ends the dead worker's session
        time.sleep(0.05)
    before = _documents(pg_url)  # the close is one transaction: nothing of it, or (killed after its commit) all
    code, recs, err = run_worker(env, "--jobs", "close")
    (close,) = job_records(recs, "close")
    assert code == 0 and close["status"] == "ok", err
    after = _documents(pg_url)
    assert after == _expected(ids, started, close["result"]["as_of"])
    assert before in ([], after) and close["result"]["invoices"] == len(after) - len(before)


def test_bad_options_are_named_errors(sqlite_url, tmp_path, monkeypatch):
    for key, value in worker_env(sqlite_url, tmp_path / "plans").items():
        if key.startswith("BILLING_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("BILLING_WEBHOOK_URL", "http://127.0.0.1:9/hooks")
    monkeypatch.delenv("BILLING_WEBHOOK_SECRET", raising=False)
    runner = CliRunner()
    for args, message in ((["--jobs", "close,nope"], "unknown job(s) 'nope'"),
                          (["--interval", "close=0"], "--interval close: must be over 0"),
                          (["--jobs", "outbox"], "outbox: BILLING_WEBHOOK_URL and BILLING_WEBHOOK_SECRET go together")):
        result = runner.invoke(app, ["worker", "--once", *args])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), (args, result.output)
