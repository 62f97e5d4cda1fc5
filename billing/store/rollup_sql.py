"""SQL of the hourly rollups (``usage_rollup``, ``billing.ledger.rollups``): the upsert every
writer uses (ingestion chunks, re-costs, ``billing db recount``), and the reads of reports.

Lock order (``billing.store.event_store``): rollup rows are written after the counters and
before agent task usage, in key order (text by code point, as Python sorts it).
Sums of integer properties are a JSON object per row; the upsert merges two objects key by
key (SQLite: integers; PostgreSQL: numeric, exact at any size).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from sqlalchemy import Connection

from billing.store.wide import WIDE, add_sql, exact_sums, split, sum_sql, summed

STALE_FLAG = "rollups_stale"
COLUMNS = "customer_id, hour, type, model, dim, value, events, cost_pico, cost_carry, sums, rounded, odd"
_KEY = "customer_id, hour, type, model, dim, value"


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


@lru_cache(maxsize=4)
def rollup_upsert(ph: str, pg: bool) -> str:
    return (f"INSERT INTO usage_rollup ({COLUMNS}) VALUES ({','.join([ph] * 12)}) ON CONFLICT ({_KEY}) DO UPDATE SET "
            f"events = usage_rollup.events + excluded.events, {add_sql('usage_rollup', 'cost_pico', 'cost_carry')}, "
            f"rounded = usage_rollup.rounded + excluded.rounded, odd = usage_rollup.odd + excluded.odd, "
            f"sums = {_merge_sql(pg)}")


def upsert_rollups(conn: Connection, deltas: dict[tuple, list]) -> None:
    """Add a chunk's deltas (``RollupPlanner.deltas``), in key order, one executemany."""
    if not deltas:
        return
    rows = []
    for key, (events, cost, sums, rounded, odd) in sorted(deltas.items()):
        carry, low = split(cost)
        rows.append((*key, events, low, carry, json.dumps(sums, separators=(",", ":")) if sums else "{}",
                     rounded, odd))
    pg = conn.dialect.name == "postgresql"
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.executemany(rollup_upsert("%s" if pg else "?", pg), rows)
    finally:
        cursor.close()


def dimensions(conn: Connection) -> tuple[str, ...]:
    """The properties the rollups keep per value (read in the writer's transaction)."""
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute("SELECT name FROM rollup_dimension")
        return tuple(sorted(r[0] for r in cursor.fetchall()))
    finally:
        cursor.close()


def set_dimensions(conn: Connection, names: Sequence[str]) -> None:
    conn.exec_driver_sql("DELETE FROM rollup_dimension")
    ph = _ph(conn)
    for name in sorted(set(names)):
        conn.exec_driver_sql(f"INSERT INTO rollup_dimension (name) VALUES ({ph})", (name,))


def clear(conn: Connection) -> None:
    conn.exec_driver_sql("DELETE FROM usage_rollup")
    conn.exec_driver_sql(f"DELETE FROM ledger_state WHERE name = '{STALE_FLAG}'")


def stale(conn: Connection) -> bool:
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(f"SELECT value FROM ledger_state WHERE name = '{STALE_FLAG}'")
        row = cursor.fetchone()
    finally:
        cursor.close()
    return bool(row and row[0])


# ------------------------------------------------------------------------------ reads

@dataclass
class RollupTotal:
    """Summed rollup rows of one group."""

    events: int = 0
    interactions: int = 0
    cost_pico: int = 0
    odd: int = 0
    rounded: int = 0
    sums: dict[str, int] = field(default_factory=dict)


def totals(conn: Connection, start_hour: int, end_hour: int, group: str | None, dim: str = "",
           customers: Sequence[str] | None = None, interaction_type: str = "llm.call",
           with_sums: bool = False) -> dict[tuple, RollupTotal]:
    """(customer, key) -> totals of the rows of ``dim`` (``''``: the base rows) with
    start_hour <= hour < end_hour; ``group``: ``type``, ``model``, ``value`` or None (key None)."""
    key = group or "NULL"
    params: dict = {"dim": dim, "a": start_hour, "b": end_hour, "itype": interaction_type}
    where = "dim = :dim AND hour >= :a AND hour < :b"
    parts = [None] if customers is None else [sorted(set(customers))[i:i + 500]
                                              for i in range(0, len(set(customers)), 500)]
    out: dict[tuple, RollupTotal] = {}
    from sqlalchemy import bindparam, text

    for part in parts:
        def query(split_parts: bool, part=part) -> list:
            sql = (f"SELECT customer_id, {key}, SUM(events), SUM(CASE WHEN type = :itype THEN events ELSE 0 END), "
                   f"{sum_sql('cost_pico', split_parts)}, SUM(cost_carry), SUM(odd), SUM(rounded) "
                   f"FROM usage_rollup WHERE {where}{'' if part is None else ' AND customer_id IN :ids'} "
                   f"GROUP BY customer_id{'' if group is None else ', ' + group}")
            stmt = text(sql)
            values = dict(params)
            if part is not None:
                stmt = stmt.bindparams(bindparam("ids", expanding=True))
                values["ids"] = list(part)
            return conn.execute(stmt, values).all()

        for c, k, n, i, h, m, lo, carry, odd, rounded in exact_sums(query):
            out[(c, k)] = RollupTotal(int(n), int(i or 0), int(summed(h, m, lo)) + int(carry or 0) * WIDE,
                                      int(odd or 0), int(rounded or 0))
    if with_sums:
        _add_sums(conn, out, start_hour, end_hour, group, dim, customers)
    return out


def _add_sums(conn, out, start_hour, end_hour, group, dim, customers) -> None:
    from sqlalchemy import text

    wanted = None if customers is None else set(customers)
    rows = conn.execute(text(f"SELECT customer_id, {group or 'NULL'}, sums FROM usage_rollup WHERE dim = :dim AND "
                             f"hour >= :a AND hour < :b AND sums <> '{{}}'"),
                        {"dim": dim, "a": start_hour, "b": end_hour})
    for c, k, sums in rows:
        if wanted is not None and c not in wanted:
            continue
        slot = out.get((c, k))
        if slot is None:
            continue
        for name, v in json.loads(sums).items():
            slot.sums[name] = slot.sums.get(name, 0) + int(v)
