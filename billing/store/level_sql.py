"""The value aggregations (``latest``, ``min``, ``avg``, ``time_weighted_sum``) read from the
events in SQL, for the close (``aggregate_sql``) and the quota (``reservations.exact``),
with the answers of ``billing.rating.levels`` (a property test holds them equal to the
Python aggregation). These meters have no running counter.

Each query returns, per customer, what ``levels`` finishes exactly in Python:

* ``min``: the smallest value; ``latest``: the value of the greatest (ts, event id);
* ``avg``: the values' exact sum and their count (``levels.average`` divides);
* ``time_weighted_sum``: per level, the microseconds it was held inside [start, end): each
  valued event holds until the next one in (ts, event id) order (``LEAD``), the last one
  before ``start`` into the period (so the query reads the events before ``end``, not only
  the period's); ``levels.time_weighted`` multiplies and converts to the time unit.

Event ids compare in code point order on both databases (PostgreSQL: ``COLLATE "C"``).
Only events with ``id <= watermark`` count, as in every read of a close.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal

from billing.catalog.schema import Meter
from billing.rating import levels

ZERO = Decimal(0)


def _order(pg: bool, direction: str = "") -> str:
    """(ts, event id) order, as Python compares them."""
    collate = ' COLLATE "C"' if pg else ""
    return f"e.ts{direction}, e.event_id{collate}{direction}"


def value_select(sql, meter: Meter, where: str, start_us: int, end_us: int, *, lead: str = "e.customer_id") -> str:
    """The SELECT of a value aggregation's rows (k, a, b): ``lead``, a, b, with ``where`` selecting
    the meter's events (its parameters are the caller's). ``where`` covers [start, end)
    except for a time-weighted sum, whose ``where`` must cover every event before ``end``.

    Rows: min -> (lead, min, 0); latest -> (lead, value, 0); avg -> (lead, sum, count);
    time_weighted_sum -> (lead, level, microseconds held), one row per level."""
    number = sql.number(meter.property)
    valued = f"{where} AND {number} IS NOT NULL"
    agg = meter.aggregation
    if agg == "min":
        return f"SELECT {lead} AS k, MIN({number}) AS a, 0 AS b FROM usage_event e WHERE {valued} GROUP BY {lead}"
    if agg == "avg":
        return (f"SELECT {lead} AS k, SUM({number}) AS a, COUNT(*) AS b FROM usage_event e WHERE {valued} "
                f"GROUP BY {lead}")
    if agg == "latest":
        return (f"SELECT k, v AS a, 0 AS b FROM (SELECT {lead} AS k, {number} AS v, ROW_NUMBER() OVER "
                f"(PARTITION BY {lead} ORDER BY {_order(sql.pg, ' DESC')}) AS n "
                f"FROM usage_event e WHERE {valued}) s WHERE n = 1")
    if agg == "time_weighted_sum":
        following = f"LEAD(e.ts) OVER (PARTITION BY {lead} ORDER BY {_order(sql.pg)})"
        until = f"CASE WHEN {following} IS NULL OR {following} > {int(end_us)} THEN {int(end_us)} ELSE {following} END"
        since = f"CASE WHEN e.ts > {int(start_us)} THEN e.ts ELSE {int(start_us)} END"
        return (f"SELECT k, v AS a, SUM(held) AS b FROM (SELECT {lead} AS k, {number} AS v, {until} - {since} AS held "
                f"FROM usage_event e WHERE {valued}) s WHERE held > 0 GROUP BY k, v")
    raise ValueError(f"{agg!r} is not a value aggregation")


def finish(sql, meter: Meter, rows) -> dict[str, Decimal]:
    """customer -> units from ``value_select``'s rows (``sql.scale``: the dialect's numbers)."""
    agg = meter.aggregation
    if agg == "time_weighted_sum":
        held: dict[str, dict[Decimal, int]] = defaultdict(dict)
        for customer, level, span in rows:
            value = sql.scale(level)
            held[customer][value] = held[customer].get(value, 0) + int(span)
        return {c: levels.time_weighted(h, meter.time_unit) for c, h in held.items()}
    if agg == "avg":
        return {c: levels.average(sql.scale(total), int(n)) for c, total, n in rows}
    return {c: sql.scale(value) for c, value, _ in rows}


def level_units(cursor, sql, meter: Meter, customers: Sequence[str], start_us: int, end_us: int,
                watermark: int, condition: str, condition_params: list) -> dict[str, Decimal]:
    """customer -> the value aggregation's units over [start, end), for events with
    ``id <= watermark`` (``condition``: the meter's own, ``aggregate_sql._meter_condition``)."""
    from billing.store.aggregate_sql import run

    out: dict[str, Decimal] = {}
    for i in range(0, len(customers), 500):
        chunk = list(customers[i:i + 500])
        clauses = [f"e.ts < {sql.ph}", f"e.id <= {sql.ph}",
                   f"e.customer_id IN ({','.join([sql.ph] * len(chunk))})"]
        params: list = [end_us, watermark, *chunk]
        if meter.aggregation != "time_weighted_sum":
            clauses.append(f"e.ts >= {sql.ph}")
            params.append(start_us)
        where = " AND ".join([*clauses, condition])
        run(cursor, value_select(sql, meter, where, start_us, end_us), [*params, *condition_params])
        out.update(finish(sql, meter, cursor.fetchall()))
    return out
