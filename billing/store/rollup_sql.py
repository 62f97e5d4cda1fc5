"""SQL of the hourly rollups (``usage_rollup``, ``billing.ledger.rollups``): the upsert every
writer uses (ingestion chunks, re-costs, ``billing db recount``), and the reads of reports.

Lock order (``billing.store.event_store``): rollup rows are written after the counters and
before agent task usage, in key order (text by code point, as Python sorts it).
Sums of integer properties are a JSON object per row; the upsert merges two objects key by
key (SQLite: integers; PostgreSQL: numeric, exact at any size).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import Connection

from billing.store.wide import WIDE, add_sql, exact_sums, split, sum_sql, summed

STALE_FLAG = "rollups_stale"
_SAFE = re.compile(r"^[A-Za-z0-9_\-]+$")
TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
COLUMNS = ("customer_id, hour, type, model, dims, events, cost_pico, cost_carry, " + ", ".join(TOKENS)
           + ", sums, rounded, odd, tokened")
_KEY = "customer_id, hour, type, model, dims"
_SQLITE_ROWS_PER_INSERT = 800
_WIDTH = len(COLUMNS.split(","))  # values per row


def _ph(conn: Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"


def _merge_sql(pg: bool) -> str:
    old, new = "usage_rollup.sums", "excluded.sums"
    if pg:
        merged = (f"(SELECT COALESCE(json_object_agg(s.key, s.total), '{{}}')::text FROM (SELECT key, "
                  f"SUM(value::numeric) AS total FROM (SELECT * FROM json_each_text({old}::json) UNION ALL "
                  f"SELECT * FROM json_each_text({new}::json)) AS b GROUP BY key) AS s)")
    else:
        merged = (f"(SELECT json_group_object(key, total) FROM (SELECT key, SUM(value) AS total FROM "
                  f"(SELECT key, value FROM json_each({old}) UNION ALL SELECT key, value FROM json_each({new})) "
                  f"GROUP BY key))")
    return f"CASE WHEN {new} = '{{}}' THEN {old} WHEN {old} = '{{}}' THEN {new} ELSE {merged} END"


def _on_conflict(pg: bool) -> str:
    """What a row adds to the stored row of its key (every writer's one rule)."""
    tokens = ", ".join(f"{t} = usage_rollup.{t} + excluded.{t}" for t in TOKENS)
    return (f"ON CONFLICT ({_KEY}) DO UPDATE SET "
            f"events = usage_rollup.events + excluded.events, {add_sql('usage_rollup', 'cost_pico', 'cost_carry')}, "
            f"{tokens}, rounded = usage_rollup.rounded + excluded.rounded, odd = usage_rollup.odd + excluded.odd, "
            f"tokened = usage_rollup.tokened + excluded.tokened, "
            f"sums = {_merge_sql(pg)}")


@lru_cache(maxsize=16)
def rollup_upsert(ph: str, pg: bool, rows: int = 1) -> str:
    """The upsert of ``rows`` rows (one VALUES tuple each; ``upsert_rollups``)."""
    one = "(" + ",".join([ph] * _WIDTH) + ")"
    return f"INSERT INTO usage_rollup ({COLUMNS}) VALUES {','.join([one] * rows)} {_on_conflict(pg)}"


def _rows(deltas: dict[tuple, list]) -> list[tuple]:
    """The VALUES of the deltas (``RollupPlanner``: [events, cost, 5 token sums, other sums,
    rounded, odd, tokened]), in key order."""
    rows = []
    append = rows.append
    for key in sorted(deltas):
        d = deltas[key]
        cost = d[1]
        carry, low = (0, cost) if 0 <= cost < WIDE else split(cost)
        other = d[7]
        append((*key, d[0], low, carry, d[2], d[3], d[4], d[5], d[6],
                json.dumps(other, separators=(",", ":"), sort_keys=True) if other else "{}", d[8], d[9], d[10]))
    return rows


def upsert_rollups(conn: Connection, deltas: dict[tuple, list]) -> None:
    """Add a chunk's deltas (``RollupPlanner.deltas``), in key order:
    SQLite: a few hundred rows per statement (the write lock is held: any order is safe);
    PostgreSQL: one executemany in key order (text by code point: the global lock order)."""
    if not deltas:
        return
    pg = conn.dialect.name == "postgresql"
    cursor = conn.connection.driver_connection.cursor()
    try:
        if pg:
            cursor.executemany(rollup_upsert("%s", True), _rows(deltas))
            return
        for sql, params in sqlite_upserts(cursor.connection, deltas):
            cursor.execute(sql, params)
    finally:
        cursor.close()


def sqlite_upserts(connection: sqlite3.Connection, deltas: dict[tuple, list]) -> list[tuple[str, list]]:
    """SQLite: the statements (SQL, parameters) adding ``deltas``, a few hundred rows each
    (as many as ``connection`` takes parameters for)."""
    rows = _rows(deltas)
    per = max(1, min(_SQLITE_ROWS_PER_INSERT, connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _WIDTH))
    return [(rollup_upsert("?", False, len(part)), [v for r in part for v in r])
            for part in (rows[i:i + per] for i in range(0, len(rows), per))]


# ------------------------------------------------------- PostgreSQL, inside one statement

# a row per event (``event_rows``): the key, the event id, then what it adds
_EVENT_ROW = (("customer_id", "varchar"), ("event_id", "varchar"), ("hour", "bigint"), ("type", "varchar"),
              ("model", "varchar"), ("dims", "varchar"), ("events", "bigint"), ("cost", "numeric"),
              *((t, "bigint") for t in TOKENS), ("sums", "text"), ("rounded", "bigint"), ("odd", "bigint"),
              ("tokened", "bigint"))
_KEY_ORDER = 'customer_id COLLATE "C", hour, type COLLATE "C", model COLLATE "C", dims COLLATE "C"'


def event_rows(per_event: list[tuple[str, tuple, list]]) -> list[tuple]:
    """The rows ``inserted_upsert_cte`` takes (one JSON parameter) from (event id, key,
    delta) of single events (``RollupPlanner``); the cost as numeric text."""
    return [(*key[:1], event_id, *key[1:], d[0], str(d[1]), d[2], d[3], d[4], d[5], d[6],
             json.dumps(d[7], separators=(",", ":"), sort_keys=True) if d[7] else "{}", d[8], d[9], d[10])
            for event_id, key, d in per_event]


def inserted_upsert_cte(inserted: str, wait: str) -> str:
    """PostgreSQL: common table expressions ending in ``ru``, a data-modifying one (``RETURNING
    1``) that adds to the rollups the rows of ``event_rows`` (its one ``%s``: their JSON) of
    the events the CTE ``inserted`` returns (customer_id, event_id): per key, their sum, in key
    order (``_KEY_ORDER``: one upsert per key, as the planner sums a chunk's events), then
    ``_on_conflict`` as every other writer. ``wait``: a condition holding its writes back
    (the lock order of ``billing.store.event_store``)."""
    cols = ", ".join(f"(e->>{i})::{t} AS {c}" for i, (c, t) in enumerate(_EVENT_ROW))
    tokens = ", ".join(f"SUM({t})::bigint AS {t}" for t in TOKENS)
    carry = f"(div(c, {WIDE}::numeric) - CASE WHEN mod(c, {WIDE}::numeric) < 0 THEN 1 ELSE 0 END)"  # floor: split()
    return (f"rv AS (SELECT {cols} FROM jsonb_array_elements(%s::jsonb) AS e), "
            f"ri AS (SELECT rv.* FROM rv JOIN {inserted} USING (customer_id, event_id)), "
            # the integer sums of other properties, per key: a JSON object as json.dumps writes it
            "rs AS (SELECT customer_id, hour, type, model, dims, '{' || string_agg(to_json(k)::text || ':' || v::text, "
            "',' ORDER BY k COLLATE \"C\") || '}' AS sums FROM (SELECT r.customer_id, r.hour, r.type, r.model, r.dims, "
            "j.key AS k, SUM(j.value::numeric) AS v FROM ri r, json_each_text(r.sums::json) AS j WHERE r.sums <> '{}' "
            "GROUP BY 1, 2, 3, 4, 5, 6) AS s GROUP BY 1, 2, 3, 4, 5), "
            f"rg AS (SELECT customer_id, hour, type, model, dims, SUM(events) AS n, SUM(cost) AS c, {tokens}, "
            "SUM(rounded) AS rounded, SUM(odd) AS odd, SUM(tokened) AS tokened FROM ri GROUP BY 1, 2, 3, 4, 5), "
            f"ru AS (INSERT INTO usage_rollup ({COLUMNS}) SELECT customer_id, hour, type, model, dims, n, "
            f"(c - {carry} * {WIDE}::numeric)::bigint, {carry}::bigint, {', '.join(TOKENS)}, "
            "COALESCE(rs.sums, '{}'), rounded, odd, tokened FROM rg LEFT JOIN rs USING (customer_id, hour, type, model, "
            f"dims) WHERE {wait} ORDER BY {_KEY_ORDER} {_on_conflict(True)} RETURNING 1)")


DIMENSIONS_SQL = "SELECT name FROM rollup_dimension"


def dimensions(conn: Connection) -> tuple[str, ...]:
    """The properties the rollups keep per value (read in the writer's transaction)."""
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(DIMENSIONS_SQL)
        return dimensions_of(cursor.fetchall())
    finally:
        cursor.close()


def dimensions_of(rows) -> tuple[str, ...]:
    """The dimensions from ``DIMENSIONS_SQL``'s rows."""
    return tuple(sorted(r[0] for r in rows))


def set_dimensions(conn: Connection, names: Sequence[str]) -> None:
    conn.exec_driver_sql("DELETE FROM rollup_dimension")
    ph = _ph(conn)
    for name in sorted(set(names)):
        conn.exec_driver_sql(f"INSERT INTO rollup_dimension (name) VALUES ({ph})", (name,))


def clear(conn: Connection, from_hour: int | None = None) -> None:
    """Every rollup row (``from_hour``: those of that hour, µs, and later)."""
    if from_hour is None:
        conn.exec_driver_sql("DELETE FROM usage_rollup")
    else:
        conn.exec_driver_sql(f"DELETE FROM usage_rollup WHERE hour >= {int(from_hour)}")
    conn.exec_driver_sql(f"DELETE FROM ledger_state WHERE name = '{STALE_FLAG}'")


def stale(conn: Connection) -> bool:
    return flag_set(conn, STALE_FLAG)


def flag_set(conn: Connection, name: str) -> bool:
    """Is the ``ledger_state`` flag ``name`` (``rollups_stale``, ``counters_stale``) set?"""
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(f"SELECT value FROM ledger_state WHERE name = '{name}'")
        row = cursor.fetchone()
    finally:
        cursor.close()
    return bool(row and row[0])


# ------------------------------------------------------------------------------ reads

@dataclass
class RollupTotal:
    """Summed rollup rows of one group (with ``totals``' ``outcome_types``, also the margin
    report's cost split: ``billing.reports.split_repository``)."""

    events: int = 0
    interactions: int = 0
    cost_pico: int = 0
    odd: int = 0
    rounded: int = 0
    tokens: tuple[int, ...] = (0, 0, 0, 0, 0)  # TOKENS
    ai_cost_pico: int = 0  # the cost of the rows whose every event carries a token count
    outcomes: int = 0  # the events of ``outcome_types``
    mixed: int = 0  # rows whose events are not all with or all without tokens, or unknown (NULL ``tokened``)


# the rows whose events all carry a token count, and those the split cannot answer
PURE = "tokened = events AND events > 0"
MIXED = "CASE WHEN tokened IS NULL OR events <= 0 OR (tokened > 0 AND tokened < events) THEN 1 ELSE 0 END"


def key_sql(dialect: str, name: str) -> str:
    """A group of the rows: ``type``, ``model`` or a rolled-up dimension (its text; NULL when absent)."""
    if name in ("type", "model"):
        return name
    if name == "@day":  # the UTC day of the hour (``billing.reports.repository.DAY``)
        return "(hour / 86400000000)"
    if not _SAFE.match(name):
        raise ValueError(f"property name {name!r} may only use letters, digits, '_' and '-'")
    if dialect == "postgresql":
        return f"(dims::json->>'{name}')"
    return f"json_extract(dims, '$.\"{name}\"')"


def totals(conn: Connection, start_hour: int, end_hour: int, groups: Sequence[str] = (),
           customers: Sequence[str] | None = None, interaction_type: str = "llm.call",
           outcome_types: Sequence[str] | None = None) -> dict[tuple, RollupTotal]:
    """(customer, *values of ``groups``) -> totals of the rows with start_hour <= hour < end_hour.
    ``outcome_types``: with the cost split's columns (``ai_cost_pico``, ``outcomes``, ``mixed``)
    in the same scan of the rows."""
    from sqlalchemy import bindparam, text

    keys = [key_sql(conn.dialect.name, g) for g in groups]
    select_keys = "".join(f", {k}" for k in keys)
    tokens = ", ".join(f"SUM({t})" for t in TOKENS)
    ids = sorted(set(customers)) if customers is not None else None
    parts = [None] if ids is None else [ids[i:i + 500] for i in range(0, len(ids), 500)]
    out: dict[tuple, RollupTotal] = {}
    n = len(keys)
    with_split = outcome_types is not None
    for part in parts:
        def query(split_parts: bool, part=part) -> list:
            extra = ""
            if with_split:
                extra = (f", {sum_sql(f'CASE WHEN {PURE} THEN cost_pico ELSE 0 END', split_parts)}, "
                         f"SUM(CASE WHEN {PURE} THEN cost_carry ELSE 0 END), "
                         f"SUM(CASE WHEN type IN :otypes THEN events ELSE 0 END), SUM({MIXED})")
            sql = (f"SELECT customer_id{select_keys}, SUM(events), SUM(CASE WHEN type = :itype THEN events ELSE 0 END), "
                   f"{sum_sql('cost_pico', split_parts)}, SUM(cost_carry), SUM(odd), SUM(rounded), {tokens}{extra} "
                   f"FROM usage_rollup WHERE hour >= :a AND hour < :b"
                   f"{'' if part is None else ' AND customer_id IN :ids'} GROUP BY customer_id{select_keys}")
            stmt = text(sql)
            values: dict = {"a": start_hour, "b": end_hour, "itype": interaction_type}
            if part is not None:
                stmt = stmt.bindparams(bindparam("ids", expanding=True))
                values["ids"] = list(part)
            if with_split:
                stmt = stmt.bindparams(bindparam("otypes", expanding=True))
                values["otypes"] = list(outcome_types) or [""]
            return conn.execute(stmt, values).all()

        for row in exact_sums(query):
            key = tuple(row[:1 + n])
            ev, inter, h, m, lo, carry, odd, rounded = row[1 + n:9 + n]
            total = RollupTotal(int(ev), int(inter or 0), int(summed(h, m, lo)) + int(carry or 0) * WIDE,
                                int(odd or 0), int(rounded or 0), tuple(int(t or 0) for t in row[9 + n:14 + n]))
            if with_split:
                ah, am, alo, acarry, outcomes, mixed = row[14 + n:]
                total.ai_cost_pico = int(summed(ah, am, alo)) + int(acarry or 0) * WIDE
                total.outcomes, total.mixed = int(outcomes or 0), int(mixed or 0)
            out[key] = total
    return out
