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

from sqlalchemy import Engine, delete, select, tuple_, update

from billing.store.operational_models import IdempotencyRecord

_t = IdempotencyRecord.__table__
T = TypeVar("T")

OWNED, REPLAY, IN_USE, REUSED = "owned", "replay", "in_use", "reused"

# the claim's and finish's statements (``{ph}``: the driver's placeholder)
_INSERT = ("INSERT INTO idempotency_record (scope, key, fingerprint, status, owner, locked_until, created_at) "
           "VALUES ({ph}, {ph}, {ph}, 'in_flight', {ph}, {ph}, {ph}) ON CONFLICT DO NOTHING RETURNING key")
_SELECT = ("SELECT fingerprint, status, owner, locked_until, created_at, response_status, response_headers, "
           "response_body FROM idempotency_record WHERE scope = {ph} AND key = {ph}")
_WHERE_SAME = "WHERE scope = {ph} AND key = {ph} AND owner = {ph} AND status = {ph} AND created_at = {ph} RETURNING key"
_RENEW_ALL = ("UPDATE idempotency_record SET fingerprint = {ph}, status = 'in_flight', owner = {ph}, "
              "locked_until = {ph}, created_at = {ph}, response_status = NULL, response_headers = NULL, "
              "response_body = NULL " + _WHERE_SAME)
_TAKE_OVER = "UPDATE idempotency_record SET owner = {ph}, locked_until = {ph} " + _WHERE_SAME
# PostgreSQL: the claim's insert and, when the key exists, its row, in one statement (a row
# committed after the statement's snapshot conflicts but is not read: no row, look again)
_CLAIM_PG = ("WITH ins AS (INSERT INTO idempotency_record (scope, key, fingerprint, status, owner, locked_until, "
             "created_at) VALUES (%s, %s, %s, 'in_flight', %s, %s, %s) ON CONFLICT DO NOTHING RETURNING key) "
             "SELECT true, NULL, NULL, NULL, NULL::bigint, NULL::bigint, NULL::integer, NULL, NULL::bytea FROM ins "
             "UNION ALL SELECT false, fingerprint, status, owner, locked_until, created_at, response_status, "
             "response_headers, response_body FROM idempotency_record "
             "WHERE scope = %s AND key = %s AND NOT EXISTS (SELECT 1 FROM ins)")
_FINISH = ("UPDATE idempotency_record SET status = 'done', response_status = {ph}, response_headers = {ph}, "
           "response_body = {ph} WHERE scope = {ph} AND key = {ph} AND owner = {ph} AND status = 'in_flight' "
           "RETURNING key")


@dataclass(frozen=True)
class Claim:
    outcome: str  # owned | replay | in_use | reused
    status: int | None = None  # replay: the stored response
    headers: str | None = None  # JSON list of [name, value]
    body: bytes | None = None


class IdempotencyStore:
    def __init__(self, engine: Engine):
        from billing.reservations.sql import Connections

        self.engine = engine
        self.pg = engine.dialect.name == "postgresql"
        self.conns = Connections(engine, keep=8)
        # PostgreSQL: claims on connections that commit without waiting for the WAL flush (a
        # claim need not be durable by itself: what the request then writes is committed
        # durably after it, which makes the claim durable too), so a claim is one statement
        self.claims = Connections(engine, keep=8, settings=("SET synchronous_commit TO OFF",)) if self.pg \
            else self.conns

    # ----------------------------------------------------------------- claim
    def claim(self, scope: str, key: str, fingerprint: str, owner: str, *, now_us: int, lease_us: int,
              retention_us: int) -> Claim:
        """Own (scope, key) for a request with ``fingerprint``, or say what it holds."""
        return _retrying(lambda: self._claim(scope, key, fingerprint, owner, now_us, lease_us, retention_us))

    def _claim(self, scope, key, fingerprint, owner, now_us, lease_us, retention_us) -> Claim:
        # driver connections and prepared text (``billing.reservations.sql.Connections``):
        # every guarded LLM call claims two keys, and SQLAlchemy's statement layer cost more
        # than the statements
        if self.pg:
            return self._claim_pg(scope, key, fingerprint, owner, now_us, lease_us, retention_us)
        ph, until = self.conns.ph, now_us + lease_us
        for _ in range(5):  # a row that changes between our statements: look again
            with self.conns.write() as conn:
                conn.execute("BEGIN IMMEDIATE")
                row = conn.execute(_INSERT.format(ph=ph), (scope, key, fingerprint, owner, until, now_us)).fetchone()
                if row is not None:
                    conn.execute("COMMIT")
                    return Claim(OWNED)
                row = conn.execute(_SELECT.format(ph=ph), (scope, key)).fetchone()
                if row is None:  # purged meanwhile
                    conn.execute("COMMIT")
                    continue
                claim = _judge(row, fingerprint, now_us, retention_us)
                if claim is None:  # past retention, or abandoned in flight (its lease ran out): take it over
                    r_fingerprint, r_status, r_owner, r_until, r_created = row[:5]
                    if r_created <= now_us - retention_us:
                        took = conn.execute(_RENEW_ALL.format(ph=ph), (fingerprint, owner, until, now_us, scope, key,
                                                                       r_owner, r_status, r_created)).fetchone()
                    else:
                        took = conn.execute(_TAKE_OVER.format(ph=ph), (owner, until, scope, key, r_owner, r_status,
                                                                       r_created)).fetchone()
                    claim = Claim(OWNED) if took is not None else None
                conn.execute("COMMIT")
                if claim is not None:
                    return claim
        return Claim(IN_USE)  # contended all along: the client tries again later

    def _claim_pg(self, scope, key, fingerprint, owner, now_us, lease_us, retention_us) -> Claim:
        """``_claim`` on PostgreSQL: a new key in ONE statement (insert, or read the row the
        key has) in its own transaction on a ``claims`` connection; a row to take over in a
        second statement that updates it only as read (else: look again)."""
        until = now_us + lease_us
        for _ in range(5):  # a row that changes between our statements: look again
            with self.claims.write() as conn:
                row = conn.execute(_CLAIM_PG, (scope, key, fingerprint, owner, until, now_us, scope, key)).fetchone()
                if row is None:  # committed after this statement's snapshot, or purged meanwhile
                    continue
                if row[0]:
                    return Claim(OWNED)
                claim = _judge(row[1:], fingerprint, now_us, retention_us)
                if claim is not None:
                    return claim
                r_fingerprint, r_status, r_owner, r_until, r_created = row[1:6]
                if r_created <= now_us - retention_us:  # past retention, or abandoned in flight: take it over
                    took = conn.execute(_RENEW_ALL.format(ph="%s"), (fingerprint, owner, until, now_us, scope, key,
                                                                      r_owner, r_status, r_created)).fetchone()
                else:
                    took = conn.execute(_TAKE_OVER.format(ph="%s"), (owner, until, scope, key, r_owner, r_status,
                                                                      r_created)).fetchone()
                if took is not None:
                    return Claim(OWNED)
        return Claim(IN_USE)  # contended all along: the client tries again later

    # ----------------------------------------------------------- the owner's
    def finish(self, scope: str, key: str, owner: str, status: int, headers: str, body: bytes) -> bool:
        """Store the response of the request ``owner`` ran (False: it was taken over)."""
        def run() -> bool:
            with self.conns.write() as conn:
                if self.pg:  # one statement, its own durable transaction: one round trip
                    return conn.execute(_FINISH.format(ph="%s"), (status, headers, body, scope, key,
                                                                  owner)).fetchone() is not None
                conn.execute("BEGIN IMMEDIATE")
                row = conn.execute(_FINISH.format(ph=self.conns.ph), (status, headers, body, scope, key, owner)).fetchone()
                conn.execute("COMMIT")
                return row is not None
        return _retrying(run)

    def release(self, scope: str, key: str, owner: str) -> bool:
        """Forget the key (its response is not kept): the next request with it runs. True
        when the record was deleted (False: it was taken over)."""
        def run() -> bool:
            with self.engine.begin() as conn:
                return conn.execute(delete(_t).where(_t.c.scope == scope, _t.c.key == key, _t.c.owner == owner,
                                                     _t.c.status == "in_flight")).rowcount > 0
        return _retrying(run)

    def flush(self, scope: str, key: str) -> None:
        """A durable write (PostgreSQL: committed after the WAL flush, which makes every
        transaction committed before it durable too; ``billing.reservations.durability``):
        the key's record rewritten as it is. A no-op elsewhere, and when the record is gone
        (purged: a day later, long after the WAL writer flushed)."""
        if not self.pg:
            return

        def run() -> None:
            with self.conns.write() as conn:
                conn.execute("UPDATE idempotency_record SET locked_until = locked_until WHERE scope = %s AND key = %s",
                             (scope, key))
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


def _judge(row: tuple, fingerprint: str, now_us: int, retention_us: int) -> Claim | None:
    """What an existing record (``_SELECT``'s columns) answers a claim with ``fingerprint``;
    None when the claim takes it over (past retention, or in flight with its lease run out)."""
    r_fingerprint, r_status, _owner, r_until, r_created, r_rstatus, r_headers, r_body = row
    if r_created <= now_us - retention_us:
        return None
    if r_fingerprint != fingerprint:
        return Claim(REUSED)
    if r_status == "done":
        return Claim(REPLAY, r_rstatus, r_headers, bytes(r_body))
    if r_until > now_us:
        return Claim(IN_USE)
    return None


def _retrying(run: Callable[[], T], attempts: int = 5) -> T:
    """``run()``, again after a serialization failure or deadlock (PostgreSQL) or a busy
    database (SQLite, past its busy timeout)."""
    for attempt in range(attempts):
        try:
            return run()
        except Exception as exc:  # noqa: BLE001 - through SQLAlchemy or a driver connection
            if attempt == attempts - 1 or not _retryable(exc):
                raise
            time.sleep(0.01 * 2 ** attempt)
    raise AssertionError("unreachable")


def _retryable(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None) or exc
    state = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "diag", None), "sqlstate", None)
    if state in ("40001", "40P01"):
        return True
    return "database is locked" in str(orig)
