"""kill -9 during ``billing invoice close`` (issue 11, deliverable 6): the close is one
transaction, so a process killed at any point leaves either nothing or the whole close, and
running it again produces each document once, equal to one uninterrupted close.

The ledger is large enough that the close takes a moment (over a thousand November
invoices, over a hundred October periods re-rated for late events, a credit note, an
adjustment invoice). Each trial starts from a copy of it, starts the close as a separate process,
waits until the close holds the close lock (PostgreSQL: the advisory lock is visible in
``pg_locks``; SQLite: the write lock, seen by a ``BEGIN IMMEDIATE`` that fails at once),
then SIGKILLs it after a fraction of an uninterrupted close's time (plus jitter), and runs
the close again to the end. ``BILLING_KILL_CUSTOMERS`` and ``BILLING_KILL_FRACTIONS`` (comma-
separated) make it larger or kill at more points."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from billing.invoicing.repository import CLOSE_LOCK
from billing.store.partitions import ensure_range
from billing.invoicing.service import Invoicing
from billing.store.db import make_engine
from billing.store.models import Customer, SeatChange, Subscription
from billing.ledger.recount import recount_all
from billing.store.types import to_us
from tests.support.close_scenario import (
    CATALOG, assert_gap_free, billing_command, build, cli_env, d, ledger_documents, write_plans)
from tests.support.db import BACKENDS, World, postgres_server_url

CUSTOMERS = int(os.environ.get("BILLING_KILL_CUSTOMERS", "1000"))
LATE_EVERY = 8  # every eighth customer has late October events
# fractions of an uninterrupted close's time at which the close is killed (one trial each)
FRACTIONS = [float(f) for f in os.environ.get("BILLING_KILL_FRACTIONS", "0.05,0.5,0.9").split(",")]
AS_OF = d(12, 1)


def _bulk_customers(engine, count: int) -> list[str]:
    ids = [f"k{i:05d}" for i in range(count)]
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [
            {"id": c, "name": "", "timezone": "UTC", "currency": "USD", "created_at": d(10, 1)} for c in ids])
        conn.execute(insert(Subscription.__table__), [
            {"customer_id": c, "plan_id": "seats-requests", "plan_version": 1, "status": "active",
             "started_at": d(10, 1), "anchor_at": d(10, 1), "created_at": d(10, 1)} for c in ids])
        subs = conn.execute(select(Subscription.id).where(Subscription.customer_id.like("k%"))).scalars().all()
        conn.execute(insert(SeatChange.__table__), [
            {"subscription_id": s, "effective_at": d(10, 1), "seats": 1 + s % 3, "created_at": d(10, 1)}
            for s in subs])
    return ids


def _bulk_events(engine, rows: list[tuple[str, str, object]]) -> None:
    """(customer, event id, time) request events, then every counter rebuilt from the events."""
    ph = ",".join(["%s" if engine.dialect.name == "postgresql" else "?"] * 7)
    with engine.begin() as conn:
        ensure_range(conn, min(to_us(r[2]) for r in rows), max(to_us(r[2]) for r in rows))  # (partitions)
        conn.connection.driver_connection.cursor().executemany(
            f"INSERT INTO usage_event (customer_id, event_id, type, ts, properties, model, cost_pico) VALUES ({ph})",
            [(c, e, "request", to_us(ts), "{}", None, 0) for c, e, ts in rows])
    with engine.begin() as conn:
        recount_all(conn, CATALOG)


def make_ledger(url: str) -> None:
    """The scenario ledger (``close_scenario.build``) plus CUSTOMERS customers with October
    closed; then November's usage for all and late October usage for every LATE_EVERY-th."""
    engine = make_engine(url)
    rng = random.Random(5)
    ids = _bulk_customers(engine, CUSTOMERS)
    _bulk_events(engine, [(c, f"oct{i}", d(10, 1) + timedelta(minutes=rng.randrange(44_000)))
                          for c in ids for i in range(4)])
    world = World(engine, CATALOG, d(10, 1))
    build(world)  # closes October (and re-checks it), then late and November events of its own
    _bulk_events(engine, [*((c, f"nov{i}", d(11, 1) + timedelta(minutes=rng.randrange(43_000)))
                            for c in ids for i in range(4)),
                          *((c, f"late{i}", d(10, 2) + timedelta(minutes=rng.randrange(40_000)))
                            for c in ids[::LATE_EVERY] for i in range(2))])
    engine.dispose()


class Copies:
    """Copies of one database: SQLite through the backup API, PostgreSQL as CREATE DATABASE
    ... TEMPLATE (dropped at the end)."""

    def __init__(self, backend: str, tmp_path):
        self.backend, self.tmp_path, self.made = backend, tmp_path, []
        if backend == "postgres":
            import psycopg

            self.server = postgres_server_url()
            admin = make_url(self.server).set(drivername="postgresql").render_as_string(hide_password=False)
            self.admin = psycopg.connect(admin, autocommit=True)
            self.origin = self._pg_new(template="template0")
            from billing.store.db import upgrade

            upgrade(self.origin)
        else:
            self.origin = f"sqlite:///{tmp_path / 'origin.db'}"
            from billing.store.db import upgrade

            upgrade(self.origin)

    def _pg_new(self, template: str) -> str:
        name = f"billing_t_{uuid.uuid4().hex[:20]}"
        self.admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        self.made.append(name)
        return make_url(self.server).set(database=name).render_as_string(hide_password=False)

    def copy(self) -> str:
        if self.backend == "postgres":
            return self._pg_new(template=make_url(self.origin).database)
        path = self.tmp_path / f"copy_{uuid.uuid4().hex[:8]}.db"
        with sqlite3.connect(make_url(self.origin).database) as src, sqlite3.connect(path) as dst:
            src.backup(dst)
        return f"sqlite:///{path}"

    def drop(self) -> None:
        if self.backend == "postgres":
            for name in self.made:
                self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.admin.close()


def close_holds_lock(url: str) -> bool:
    """Does a close (another process) hold the close lock right now?"""
    if url.startswith("postgresql"):
        import psycopg

        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            return conn.execute("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                                "AND objid = %s AND granted", CLOSE_LOCK).fetchone() is not None
    with sqlite3.connect(make_url(url).database, timeout=0, isolation_level=None) as conn:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return True  # the database is locked: the close holds the write lock
        conn.execute("ROLLBACK")
        return False


def start_close(url: str, plans) -> subprocess.Popen:
    return subprocess.Popen([*billing_command(), "invoice", "close", "--as-of", AS_OF.isoformat(), "--json"],
                            env=cli_env(url, plans), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_lock(url: str, proc: subprocess.Popen, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while not close_holds_lock(url):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the close never took its lock"
        time.sleep(0.002)
    return time.monotonic()


def close_in_process(url: str):
    """The same close, run to its end in this process; (result, seconds)."""
    engine = make_engine(url)
    t0 = time.monotonic()
    result = Invoicing(engine, CATALOG, clock=lambda: AS_OF + timedelta(days=1)).close(AS_OF)
    seconds = time.monotonic() - t0
    engine.dispose()
    return result, seconds


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_during_close_then_rerun_equals_one_close(backend, tmp_path):
    copies = Copies(backend, tmp_path)
    try:
        make_ledger(copies.origin)
        plans = write_plans(tmp_path / "plans")
        engine = make_engine(copies.origin)
        before = ledger_documents(engine)
        engine.dispose()

        reference_url = copies.copy()
        reference, duration = close_in_process(reference_url)
        assert len(reference.invoices) > CUSTOMERS and len(reference.credit_notes) == 1
        assert reference.adjusted_periods > CUSTOMERS // LATE_EVERY
        engine = make_engine(reference_url)
        expected = ledger_documents(engine)
        engine.dispose()

        rng = random.Random(11)
        states = []
        for fraction in FRACTIONS:
            url = copies.copy()
            proc = start_close(url, plans)
            wait_for_lock(url, proc)
            time.sleep(max(0.0, duration * fraction + rng.uniform(-0.02, 0.02)))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            engine = make_engine(url)
            after_kill = ledger_documents(engine)
            assert after_kill in (before, expected), fraction  # nothing, or the whole close: never a part
            states.append("nothing" if after_kill == before else "all")
            rerun, _ = close_in_process(url)  # the close resumes: what the killed one did not commit
            assert len(rerun.invoices) == (0 if states[-1] == "all" else len(reference.invoices))
            assert ledger_documents(engine) == expected, fraction
            assert_gap_free(engine)
            engine.dispose()
        assert "nothing" in states, states  # kills landed inside the close
        again, _ = close_in_process(url)
        assert (again.invoices, again.credit_notes, again.adjusted_periods) == ([], [], 0)
    finally:
        copies.drop()
