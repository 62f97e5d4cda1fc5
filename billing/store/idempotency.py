"""Idempotency records of HTTP requests (the ``Idempotency-Key`` header): the repository.

One row per (scope, key), scope being the API key's id. ``claim`` either makes the caller
the request's owner (a new key, an abandoned one, or one past retention) or tells it what
the key already holds: another request's fingerprint (``reused``), a request still running
(``in_use``), or the stored response (``replay``). The owner then ``finish``-es the row with
the response, or ``release``-s it (the response is not to be kept) so the request can run
again. An owner holds a lease (``locked_until``) that it ``renew``-s while it runs; a row
whose lease ran out (its server died) is taken over by the next claim. Because the row
lives in the database, any number of API servers on one database share the keys.

Every statement touches one row by its primary key except ``purge``, which deletes rows
past retention in key order, in batches (``FOR UPDATE SKIP LOCKED`` on PostgreSQL: two
servers purging at once skip each other's rows). Serialization failures and deadlocks are
retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine, and_, delete, select, text, tuple_, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import DBAPIError

from billing.store.operational_models import IdempotencyRecord

_t = IdempotencyRecord.__table__
T = TypeVar("T")

OWNED, REPLAY, IN_USE, REUSED = "owned", "replay", "in_use", "reused"


@dataclass(frozen=True)
class Claim:
    outcome: str  # owned | replay | in_use | reused
    status: int | None = None  # replay: the stored response
    headers: str | None = None  # JSON list of [name, value]
    body: bytes | None = None


class IdempotencyStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.pg = engine.dialect.name == "postgresql"

    # ----------------------------------------------------------------- claim
    def claim(self, scope: str, key: str, fingerprint: str, owner: str, *, now_us: int, lease_us: int,
              retention_us: int) -> Claim:
        """Own (scope, key) for a request with ``fingerprint``, or say what it holds."""
        return _retrying(lambda: self._claim(scope, key, fingerprint, owner, now_us, lease_us, retention_us))

    def _claim(self, scope, key, fingerprint, owner, now_us, lease_us, retention_us) -> Claim:
        mod = pg_dialect if self.pg else sqlite_dialect
        fresh = {"fingerprint": fingerprint, "status": "in_flight", "owner": owner, "locked_until": now_us + lease_us,
                 "created_at": now_us, "response_status": None, "response_headers": None, "response_body": None}
        where = and_(_t.c.scope == scope, _t.c.key == key)
        for _ in range(5):  # a row that changes between our statements: look again
            with self.engine.begin() as conn:
                if self.pg:
                    # the claim need not be durable by itself: what the request then writes is
                    # committed durably after it, which makes this record durable too
                    conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
                row = conn.execute(mod.insert(_t).values(scope=scope, key=key, **fresh).on_conflict_do_nothing()
                                   .returning(_t.c.key)).first()
                if row is not None:
                    return Claim(OWNED)
                row = conn.execute(select(_t.c.fingerprint, _t.c.status, _t.c.owner, _t.c.locked_until,
                                          _t.c.created_at, _t.c.response_status, _t.c.response_headers,
                                          _t.c.response_body).where(where)).first()
                if row is None:  # purged meanwhile
                    continue
                expired = row.created_at <= now_us - retention_us
                if not expired:
                    if row.fingerprint != fingerprint:
                        return Claim(REUSED)
                    if row.status == "done":
                        return Claim(REPLAY, row.response_status, row.response_headers, bytes(row.response_body))
                    if row.locked_until > now_us:
                        return Claim(IN_USE)
                # past retention, or abandoned in flight (its lease ran out): take it over
                took = conn.execute(update(_t).where(where, _t.c.owner == row.owner, _t.c.status == row.status,
                                                     _t.c.created_at == row.created_at)
                                    .values(**(fresh if expired else {"owner": owner,
                                                                      "locked_until": now_us + lease_us}))
                                    .returning(_t.c.key)).first()
                if took is not None:
                    return Claim(OWNED)
        return Claim(IN_USE)  # contended all along: the client tries again later

    # ----------------------------------------------------------- the owner's
    def finish(self, scope: str, key: str, owner: str, status: int, headers: str, body: bytes) -> bool:
        """Store the response of the request ``owner`` ran (False: it was taken over)."""
        def run() -> bool:
            with self.engine.begin() as conn:
                return conn.execute(update(_t).where(_t.c.scope == scope, _t.c.key == key, _t.c.owner == owner,
                                                     _t.c.status == "in_flight")
                                    .values(status="done", response_status=status, response_headers=headers,
                                            response_body=body).returning(_t.c.key)).first() is not None
        return _retrying(run)

    def release(self, scope: str, key: str, owner: str) -> None:
        """Forget the key (its response is not kept): the next request with it runs."""
        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(delete(_t).where(_t.c.scope == scope, _t.c.key == key, _t.c.owner == owner,
                                              _t.c.status == "in_flight"))
        _retrying(run)

    def renew(self, scope: str, key: str, owner: str, locked_until: int) -> bool:
        """Extend the owner's lease (False: it was taken over)."""
        def run() -> bool:
            with self.engine.begin() as conn:
                return conn.execute(update(_t).where(_t.c.scope == scope, _t.c.key == key, _t.c.owner == owner,
                                                     _t.c.status == "in_flight")
                                    .values(locked_until=locked_until).returning(_t.c.key)).first() is not None
        return _retrying(run)

    # ----------------------------------------------------------- housekeeping
    def purge(self, *, now_us: int, retention_us: int, batch: int = 5000, max_batches: int = 20) -> int:
        """Delete records created before ``now - retention`` (not those still in flight
        under a live lease), in key order, ``batch`` rows per transaction."""
        cutoff = now_us - retention_us
        total = 0
        for _ in range(max_batches):
            def run() -> int:
                victims = (select(_t.c.scope, _t.c.key)
                           .where(_t.c.created_at < cutoff, _t.c.locked_until <= now_us)
                           .order_by(_t.c.scope, _t.c.key).limit(batch))
                if self.pg:
                    victims = victims.with_for_update(skip_locked=True)
                with self.engine.begin() as conn:
                    return conn.execute(delete(_t).where(tuple_(_t.c.scope, _t.c.key).in_(victims))).rowcount
            n = _retrying(run)
            total += n
            if n < batch:
                break
        return total

    def get(self, scope: str, key: str) -> dict[str, Any] | None:
        """The record, as a dict (tests, operators)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(_t).where(_t.c.scope == scope, _t.c.key == key)).first()
        return None if row is None else dict(row._mapping)


def _retrying(run: Callable[[], T], attempts: int = 5) -> T:
    """``run()``, again after a serialization failure or deadlock (PostgreSQL) or a busy
    database (SQLite, past its busy timeout)."""
    for attempt in range(attempts):
        try:
            return run()
        except DBAPIError as exc:
            if attempt == attempts - 1 or not _retryable(exc):
                raise
            time.sleep(0.01 * 2 ** attempt)
    raise AssertionError("unreachable")


def _retryable(exc: DBAPIError) -> bool:
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "diag", None), "sqlstate", None)
    if state in ("40001", "40P01"):
        return True
    return "database is locked" in str(orig)
