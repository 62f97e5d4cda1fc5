"""SQL for the event hot path: batch insert with "exists" detection, counter and agent task
usage upserts.

Deadlock freedom on PostgreSQL: every writer of these tables (ingestion chunks, quota commits,
recounts) takes its row locks in one global order: events in (customer, event id) order, then
counters in (customer, meter, period start) order (the sum meters' rows, then the max
meters'), then hourly rollups in their key order (``billing.store.rollup_sql``), then agent
task usage in (customer, task) order. Text keys are ordered by code
point (as Python sorts them; ``COLLATE "C"`` in SQL), never by the database's collation. Two transactions that touch the
same keys then wait for each other at most one way, never in a cycle. (SQLite has a single
writer: its inserts keep the arrival order, which is cheaper.)

SQLite: ``INSERT ... ON CONFLICT DO NOTHING`` of the chunk in one transaction that holds
the write lock. PostgreSQL (``usage_event`` partitioned by month: ``billing.store.partitions``):
the chunk's keys are claimed in ``usage_event_key`` first (its primary key is the
idempotency key across months), then the events are written: ``COPY`` of the keys under a
savepoint, then ``COPY`` of the events; when a key is taken, the savepoint is rolled back
and the chunk goes through a staging table, where ``INSERT ... ON CONFLICT DO NOTHING
RETURNING`` claims the new keys and the events of those follow in the same statement.
Either way a unique key decides which events are new, so concurrent writers never
double-insert and an event reported accepted is one this transaction inserted. (Events
written behind the ledger's back, without their key, are not protected.)
"""

from __future__ import annotations

import json
import sqlite3
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from collections.abc import Sequence

from sqlalchemy import Connection

from billing.ledger.prepare import Prepared
from billing.store.totals_sql import counter_row, counter_upsert, task_row, task_upsert

_COLUMNS = "customer_id, event_id, type, ts, properties, model, cost_pico, unpriced, unmetered"
_STORED = itemgetter(0, 1, 2, 3, 4, 5, 6, 8, 9)  # a Prepared row's stored columns
_KEY = itemgetter(0, 1)  # (customer, event id)
_KEY_TS = itemgetter(0, 1, 3)  # (customer, event id, ts): a usage_event_key row
_CLAIM = "INSERT INTO usage_event_key (customer_id, event_id, ts)"
_V_COLUMNS = ", ".join(f"v.{c.strip()}" for c in _COLUMNS.split(","))
_NCOL = 9
# (customer, event id) in the order Python sorts them (code points: the "C" collation of
# UTF-8 text), whatever the database's default collation (en-US puts 'a1' before 'B1')
CODE_POINT_ORDER = 'customer_id COLLATE "C", event_id COLLATE "C"'


class _All:
    """Every row was inserted (the common case: no replays in the batch)."""

    def __contains__(self, _key: object) -> bool:
        return True


ALL_INSERTED = _All()


def insert_events(conn: Connection, rows: Sequence[Prepared]) -> set[tuple[str, str]] | _All:
    """Insert rows whose (customer, event id) is new; return the keys actually inserted
    (``ALL_INSERTED`` when every row was new)."""
    if not rows:
        return set()
    if conn.dialect.name == "postgresql":
        rows = sorted(rows, key=_KEY)  # the global lock order (module docstring)
        return _insert_pg_small(conn, rows) if len(rows) <= _PG_SMALL else _insert_pg(conn, rows)
    return _insert_sqlite(conn, rows)


_PG_SMALL = 500  # up to this many rows a plain multi-row INSERT beats COPY + staging table


def _insert_pg_small(conn: Connection, rows: Sequence[Prepared]) -> set[tuple[str, str]]:
    """One statement: the keys claimed in ``usage_event_key`` (ON CONFLICT DO NOTHING), then
    the events whose key this statement claimed."""
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(_pg_small_insert(len(rows)), list(chain.from_iterable(map(_STORED, rows))))
        return {(c, e) for c, e in cursor.fetchall()}
    finally:
        cursor.close()


_TYPED_ROW = "(%s, %s, %s, %s::bigint, %s::json, %s, %s::bigint, %s, %s)"


@lru_cache(maxsize=64)
def _pg_small_insert(n: int) -> str:
    return (f"WITH v ({_COLUMNS}) AS (VALUES {','.join([_TYPED_ROW] * n)}), "
            f"k AS ({_CLAIM} SELECT customer_id, event_id, ts FROM v ORDER BY {CODE_POINT_ORDER} "
            "ON CONFLICT DO NOTHING RETURNING customer_id, event_id) "
            f"INSERT INTO usage_event ({_COLUMNS}) SELECT {_V_COLUMNS} FROM v JOIN k USING (customer_id, event_id) "
            "RETURNING customer_id, event_id")


_SQLITE_ROWS_PER_INSERT = 5000


@lru_cache(maxsize=8)
def _sqlite_insert(n: int) -> str:
    """One INSERT of ``n`` rows. Many rows per statement, not ``executemany``: the driver
    gives up and takes back the GIL once per statement, so a thread preparing the next chunk
    runs alongside (per row, each hand-back would wait for that thread's switch interval)."""
    row = "(" + ",".join(["?"] * _NCOL) + ")"
    return (f"INSERT INTO usage_event ({_COLUMNS}) VALUES {','.join([row] * n)} "
            "ON CONFLICT (customer_id, event_id) DO NOTHING")


def _insert_sqlite(conn: Connection, rows: Sequence[Prepared]) -> set[tuple[str, str]] | _All:
    """executemany with ON CONFLICT DO NOTHING. The transaction holds SQLite's write lock
    (BEGIN IMMEDIATE), so rowids above the pre-insert maximum are exactly this batch's."""
    dbapi = conn.connection.driver_connection
    cursor = dbapi.cursor()
    try:
        cursor.execute("SELECT COALESCE(MAX(id), 0) FROM usage_event")
        before_id = cursor.fetchone()[0]
        before = dbapi.total_changes
        per = max(1, min(_SQLITE_ROWS_PER_INSERT, dbapi.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _NCOL))
        for i in range(0, len(rows), per):
            part = rows[i:i + per]
            cursor.execute(_sqlite_insert(len(part)), list(chain.from_iterable(map(_STORED, part))))
        if dbapi.total_changes - before == len(rows):
            return ALL_INSERTED
        cursor.execute("SELECT customer_id, event_id FROM usage_event WHERE id > ?", (before_id,))
        return set(cursor.fetchall())
    finally:
        cursor.close()


def _insert_pg(conn: Connection, rows: Sequence[Prepared]) -> set[tuple[str, str]] | _All:
    """COPY the keys, then the events (the common case: every event is new). If a key is
    taken (a replay, or a concurrent writer of the same id), its primary key stops the COPY;
    the savepoint is rolled back and the chunk goes through the staging table instead,
    where ON CONFLICT DO NOTHING sorts the new from the known."""
    import psycopg

    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute("SAVEPOINT usage_event_copy")
        try:  # the keys first (their primary key stops the COPY on a taken one), then the events
            with cursor.copy("COPY usage_event_key (customer_id, event_id, ts) FROM STDIN") as copy:
                write = copy.write_row
                for r in rows:
                    write(_KEY_TS(r))
        except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
            # (two writers racing with the same new ids may each wait on the other's rows)
            cursor.execute("ROLLBACK TO SAVEPOINT usage_event_copy")
            cursor.execute("RELEASE SAVEPOINT usage_event_copy")
            return _insert_pg_staged(conn, rows)
        cursor.execute("RELEASE SAVEPOINT usage_event_copy")
        with cursor.copy(f"COPY usage_event ({_COLUMNS}) FROM STDIN") as copy:
            write = copy.write_row
            for r in rows:
                write(_STORED(r))
        return ALL_INSERTED
    finally:
        cursor.close()


def _insert_pg_staged(conn: Connection, rows: Sequence[Prepared]) -> set[tuple[str, str]]:
    """COPY into a temporary staging table, then one statement: claim the keys (ON CONFLICT
    DO NOTHING), insert the events of the keys claimed, RETURNING them."""
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS usage_event_stage ("
            "customer_id varchar(200), event_id varchar(200), type varchar(100), ts bigint, "
            "properties json, model varchar(200), cost_pico bigint, unpriced varchar(500), unmetered varchar(500)) "
            "ON COMMIT DELETE ROWS")
        with cursor.copy(f"COPY usage_event_stage ({_COLUMNS}) FROM STDIN") as copy:
            write = copy.write_row
            for r in rows:
                write(_STORED(r))
        cursor.execute(
            f"WITH k AS ({_CLAIM} SELECT customer_id, event_id, ts FROM usage_event_stage ORDER BY {CODE_POINT_ORDER} "
            "ON CONFLICT DO NOTHING RETURNING customer_id, event_id) "
            f"INSERT INTO usage_event ({_COLUMNS}) SELECT {_V_COLUMNS} FROM usage_event_stage v "
            "JOIN k USING (customer_id, event_id) RETURNING customer_id, event_id")
        inserted = {(c, e) for c, e in cursor.fetchall()}
        cursor.execute("TRUNCATE usage_event_stage")
        return inserted
    finally:
        cursor.close()


def existing_events(conn: Connection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple]:
    """(customer, event id) -> (type, ts, properties dict) for keys already stored. On
    PostgreSQL a key whose event was archived answers (None, its ts, None): equal to no event,
    so an event sent again with that id is a conflict (``billing.store.partitions``)."""
    out: dict[tuple[str, str], tuple] = {}
    by_customer: dict[str, list[str]] = {}
    for customer, event_id in keys:
        by_customer.setdefault(customer, []).append(event_id)
    cursor = conn.connection.driver_connection.cursor()
    ph = "%s" if conn.dialect.name == "postgresql" else "?"
    try:
        for customer, ids in by_customer.items():
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                cursor.execute(
                    f"SELECT event_id, type, ts, properties FROM usage_event WHERE customer_id = {ph} "
                    f"AND event_id IN ({','.join([ph] * len(part))})", [customer, *part])
                for event_id, etype, ts, props in cursor.fetchall():
                    out[(customer, event_id)] = (etype, ts, json.loads(props) if isinstance(props, str) else props)
        if ph == "%s" and len(out) < len(keys):  # a key whose event was archived: its time is kept
            for customer, event_id in keys:
                if (customer, event_id) not in out:
                    cursor.execute("SELECT ts FROM usage_event_key WHERE customer_id = %s AND event_id = %s",
                                   (customer, event_id))
                    found = cursor.fetchone()
                    out[(customer, event_id)] = (None, found[0] if found else None, None)  # (never equal)
    finally:
        cursor.close()
    return out


def upsert_counters(conn: Connection, deltas: dict[tuple[str, str, int], list]) -> None:
    """Atomic increments (``max`` meters: atomic maximum) of the running counters, in key
    order (sums, then maxima: as quota commits write them, so concurrent writers never
    deadlock). Each delta's units and cost (exact ints of any size) go in as (carry, low)
    parts, which the statement adds to the row's without overflow (``billing.store.totals_sql``)."""
    if not deltas:
        return
    ph = "%s" if conn.dialect.name == "postgresql" else "?"
    add_rows, max_rows = [], []
    for (customer, meter, start), (end, units, events, cost, is_max) in sorted(deltas.items()):
        (max_rows if is_max else add_rows).append(counter_row(customer, meter, start, end, units, events, cost))
    cursor = conn.connection.driver_connection.cursor()
    try:
        if add_rows:
            cursor.executemany(counter_upsert(ph, False), add_rows)
        if max_rows:
            cursor.executemany(counter_upsert(ph, True), max_rows)
    finally:
        cursor.close()


def upsert_tasks(conn: Connection, tasks: dict[tuple[str, str], list[int]], now_us: int) -> None:
    """Atomic increments of agent task usage: (customer, task) -> [steps, tokens, cost_pico],
    in key order, exact at any size (``billing.store.totals_sql``)."""
    if not tasks:
        return
    ph = "%s" if conn.dialect.name == "postgresql" else "?"
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.executemany(task_upsert(ph), [task_row(customer, task, steps, tokens, cost, now_us) for
                                             (customer, task), (steps, tokens, cost) in sorted(tasks.items())])
    finally:
        cursor.close()
