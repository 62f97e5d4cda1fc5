"""Ledgers with periods due by the real clock (the worker closes ``now - grace``), the
``billing worker`` command as a process, and its JSON lines."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from billing.ledger.recount import recount_all
from billing.store.partitions import ensure_range
from billing.store.models import Customer, Invoice, SeatChange, Subscription
from billing.store.types import to_us
from tests.support.close_scenario import CATALOG, cli_env, write_plans


def month_start(at: datetime, back: int = 0) -> datetime:
    """The first instant (UTC) of ``at``'s calendar month, ``back`` months earlier."""
    start = at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for _ in range(back):
        start = (start - timedelta(days=1)).replace(day=1)
    return start


def due_ledger(engine, customers: int, started: datetime, events_each: int = 3,
               now: datetime | None = None) -> list[str]:
    """``customers`` customers on ``seats-requests`` (calendar months) since ``started``,
    each with about ``events_each`` request events a month from ``started`` to ``now``
    (default: the clock), the counters rebuilt from them. Returns the customer ids."""
    now = now or datetime.now(UTC)
    ids = [f"w{i:05d}" for i in range(customers)]
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [
            {"id": c, "name": "", "timezone": "UTC", "currency": "USD", "created_at": started} for c in ids])
        conn.execute(insert(Subscription.__table__), [
            {"customer_id": c, "plan_id": "seats-requests", "plan_version": 1, "status": "active",
             "started_at": started, "anchor_at": started, "created_at": started} for c in ids])
        subs = conn.execute(select(Subscription.id).order_by(Subscription.id)).scalars().all()
        conn.execute(insert(SeatChange.__table__), [
            {"subscription_id": s, "effective_at": started, "seats": 1 + s % 3, "created_at": started} for s in subs])
    rng = random.Random(7)
    span = int((now - started).total_seconds()) - 60
    rows = [(c, f"{c}-{i}", to_us(started + timedelta(seconds=rng.randrange(span)))) for c in ids
            for i in range(events_each * max(1, span // (30 * 86_400)))]
    ph = ",".join(["%s" if engine.dialect.name == "postgresql" else "?"] * 7)
    with engine.begin() as conn:
        ensure_range(conn, min(r[2] for r in rows), max(r[2] for r in rows))  # (PostgreSQL's monthly partitions)
        conn.connection.driver_connection.cursor().executemany(
            f"INSERT INTO usage_event (customer_id, event_id, type, ts, properties, model, cost_pico) VALUES ({ph})",
            [(c, e, "request", ts, "{}", None, 0) for c, e, ts in rows])
    with engine.begin() as conn:
        recount_all(conn, CATALOG)
    return ids


def due_periods(started: datetime, as_of: datetime) -> list[datetime]:
    """The calendar months from ``started`` that ended by ``as_of`` (their starts)."""
    out, start = [], started
    while True:
        end = (start + timedelta(days=32)).replace(day=1)
        if end > as_of:
            return out
        out.append(start)
        start = end


def invoice_keys(engine) -> list[tuple[str, int, datetime]]:
    """Every invoice (not credit note) as (customer, subscription, period start), sorted;
    a doubled invoice shows as a repeated key."""
    with engine.connect() as conn:
        rows = conn.execute(select(Invoice.customer_id, Invoice.subscription_id, Invoice.period_start)
                            .where(Invoice.kind == "invoice")).all()
    return sorted((c, s, p.astimezone(UTC)) for c, s, p in rows)


def worker_env(url: str, plans: Path, **settings: str) -> dict[str, str]:
    env = cli_env(url, write_plans(plans))
    env.update({f"BILLING_{k.upper()}": v for k, v in settings.items()})
    return env


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "billing", "worker", *args]


def run_worker(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[int, list[dict], str]:
    """``billing worker --once ...``: (exit code, the JSON records, stderr)."""
    done = subprocess.run(worker_command("--once", *args), env=env, capture_output=True, text=True, timeout=timeout)
    return done.returncode, records(done.stdout), done.stderr


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def job_records(recs: list[dict], job: str) -> list[dict]:
    return [r for r in recs if r.get("job") == job]


class WorkerProcess:
    """A ``billing worker`` process whose JSON lines are read as they come."""

    def __init__(self, env: dict[str, str], *args: str):
        self.proc = subprocess.Popen(worker_command(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.lines: list[dict] = []
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._buffer = ""

    def poll_lines(self) -> list[dict]:
        try:
            chunk = self.proc.stdout.read() or ""
        except (BlockingIOError, TypeError):
            chunk = ""
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split("\n")
        self.lines.extend(json.loads(line) for line in complete if line.strip())
        return self.lines

    def wait_for(self, predicate: Callable[[list[dict]], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.poll_lines()):
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}: {self.proc.stderr.read()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; lines so far: {self.lines}")
            time.sleep(0.02)

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        os.set_blocking(self.proc.stdout.fileno(), True)
        self._buffer += self.proc.stdout.read()
        self.poll_lines()
        if self._buffer.strip():
            self.lines.append(json.loads(self._buffer))
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


def pg_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def advisory_lock_held(url: str, key: tuple[int, int]) -> bool:
    """Does any session hold the two-key advisory lock ``key`` right now?"""
    import psycopg

    with psycopg.connect(pg_conninfo(url), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s "
                            "AND objsubid = 2 AND granted", key).fetchone() is not None


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that answers 200 and keeps each POST (headers, body)."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server hook
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((dict(self.headers), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "WebhookReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
