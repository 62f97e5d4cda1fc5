"""One lock per job name: a worker runs a job only while it holds the job's lock, and a
worker that cannot take it at once skips that run (another worker is running the job).

- PostgreSQL: a session advisory lock ``pg_try_advisory_lock(JOB_LOCK_CLASS, id)`` on a
  connection of its own, held while the job runs (the job's transactions use other
  connections). It lives in the two-key space, apart from the one-key locks of quota
  reservations and from the close's own lock (class "bill"). A worker that dies loses its
  connection, and the server releases the lock with it.
- SQLite: ``flock`` on ``<database file>.worker-<job>.lock`` (released by the kernel when the
  process dies). An in-memory database, or a platform without ``fcntl``, has nothing to
  exclude against: run one worker there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine

log = logging.getLogger("billing.worker")

JOB_LOCK_CLASS = 0x776B6572  # "wker"
JOB_LOCK_IDS = {"close": 1, "outbox": 2, "purge_holds": 3, "stripe_sync": 4, "alerts": 5, "partitions": 6,
                "archive": 7}  # (archive: `billing events archive`, one at a time)


def lock_key(name: str) -> tuple[int, int]:
    """The job's PostgreSQL advisory lock (two int4 keys)."""
    return JOB_LOCK_CLASS, JOB_LOCK_IDS[name]


@contextmanager
def job_lock(engine: Engine, name: str) -> Iterator[bool]:
    """Yields True while this process holds the job's lock, False if another holds it."""
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, lock_key(name)) as held:
            yield held
    else:
        with _file_lock(engine, name) as held:
            yield held


@contextmanager
def _advisory_lock(engine: Engine, key: tuple[int, int]) -> Iterator[bool]:
    conn = engine.connect()
    held = False
    try:
        held = bool(conn.exec_driver_sql("SELECT pg_try_advisory_lock(%s, %s)", key).scalar())
        conn.commit()  # a session lock outlives the transaction; the connection now idles
        yield held
    finally:
        try:
            if held:
                conn.exec_driver_sql("SELECT pg_advisory_unlock(%s, %s)", key)
                conn.commit()
        except Exception:  # noqa: BLE001 - never pool a connection that may still hold the lock
            log.exception("could not release the worker lock %s", key)
            conn.invalidate()
        finally:
            conn.close()


def lock_file(engine: Engine, name: str) -> Path | None:
    """The SQLite database's lock file for the job (None for an in-memory database)."""
    database = engine.url.database
    if database in (None, "", ":memory:"):
        return None
    return Path(f"{database}.worker-{name}.lock")


@contextmanager
def _file_lock(engine: Engine, name: str) -> Iterator[bool]:
    path = lock_file(engine, name)
    try:
        import fcntl
    except ImportError:  # not POSIX: one worker per SQLite database (README)
        fcntl = None  # type: ignore[assignment]
    if path is None or fcntl is None:
        yield True
        return
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
