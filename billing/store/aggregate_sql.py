"""Meter aggregation in SQL (one GROUP BY per meter per customer chunk), for SQLite and
PostgreSQL, with the same answers as ``billing.rating.meters.aggregate`` (a test holds
them equal). Only events with ``id <= watermark`` count, so a close sees one snapshot.

Numbers: token counts are integers; other numeric properties are summed exactly on
PostgreSQL and as 6-decimal fixed point on SQLite (JSON numbers with decimals are doubles
there; integers stay exact). Sums are exact past 2^63 on both (``billing.store.wide``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection

from billing.catalog.schema import VALUE_AGGREGATIONS, Meter, PercentagePrice, Plan
from billing.store.level_sql import level_units
from billing.store.types import to_us
from billing.store.wide import exact_sums, sum_sql, sum_sql_params, summed
from billing.rating.charges.percentage import needs_transactions
from billing.rating.periods import Period
from billing.rating.types import MeterTotals

_SAFE = re.compile(r"^[A-Za-z0-9_\-]+$")
PICO = Decimal(10) ** 12
MICRO = Decimal(10) ** 6
_CHUNK = 500


class _Sql:
    def __init__(self, dialect: str):
        self.pg = dialect == "postgresql"
        self.ph = "%s" if self.pg else "?"

    def text(self, prop: str, alias: str = "e") -> str:
        """The property as text, like Python's ``str()`` of the JSON value (true -> 'True')."""
        if prop == "model":
            return f"{alias}.model"
        if not _SAFE.match(prop):
            raise ValueError(f"property name {prop!r} cannot be used in SQL aggregation")
        if self.pg:
            return (f"(CASE json_typeof({alias}.properties->'{prop}') WHEN 'boolean' "
                    f"THEN initcap({alias}.properties->>'{prop}') ELSE {alias}.properties->>'{prop}' END)")
        return (f"(CASE json_type({alias}.properties, '$.{prop}') WHEN 'true' THEN 'True' WHEN 'false' THEN 'False' "
                f"ELSE CAST(json_extract({alias}.properties, '$.{prop}') AS TEXT) END)")

    def number(self, prop: str) -> str:
        """The property as an exact number (PG numeric) or micro-units (SQLite integer)."""
        if not _SAFE.match(prop):
            raise ValueError(f"property name {prop!r} cannot be used in SQL aggregation")
        if self.pg:
            return f"(e.properties->>'{prop}')::numeric"
        value = f"json_extract(e.properties, '$.{prop}')"  # an integer times 10^6 stays exact, a double is rounded
        return (f"(CASE json_type(e.properties, '$.{prop}') WHEN 'integer' THEN {value} * 1000000 "
                f"ELSE CAST(ROUND({value} * 1000000) AS INTEGER) END)")

    def scale(self, value) -> Decimal:
        if value is None:
            return Decimal(0)
        return Decimal(value) if self.pg else Decimal(value) / MICRO


def run(cursor, sql: str, params) -> None:
    """Execute an aggregation. psycopg prepares a statement run 5 times, and PostgreSQL then
    settles on a generic plan: for one customer's window that is the (ts, customer_id)
    index over the whole window's events (30x slower than the customer's own rows). So
    these queries are never prepared: each gets a plan for its own values."""
    if type(cursor).__module__.startswith("psycopg"):
        cursor.execute(sql, params, prepare=False)
    else:
        cursor.execute(sql, params)


def _meter_condition(sql: _Sql, meter: Meter, watermark: int, params: list) -> str:
    """SQL condition selecting a meter's events (type, property filters, disputes)."""
    clauses = [f"e.type = {sql.ph}"]
    params.append(meter.event_type)
    for prop, op, operand in meter._filter_rules:  # Meter.matches' rules (schema.rule_holds), in SQL
        value = sql.text(prop)
        if op == "exists":
            clauses.append(f"{value} IS {'NOT NULL' if operand else 'NULL'}")
            continue
        options = sorted(operand)  # type: ignore[arg-type]
        listed = f"{value} IN ({','.join([sql.ph] * len(options))})"
        clauses.append(listed if op == "in" else f"({value} IS NULL OR NOT {listed})")
        params.extend(options)
    if meter.disputes:
        d = meter.disputes
        clauses.append(
            f"NOT EXISTS (SELECT 1 FROM usage_event d WHERE d.customer_id = e.customer_id "
            f"AND d.type IN ({','.join([sql.ph] * len(d.dispute_types))}) "
            f"AND {sql.text(d.id_property, 'd')} = {sql.text(d.id_property)} "
            f"AND d.ts >= e.ts AND d.ts <= e.ts + {int(d.window_days) * 86_400_000_000} AND d.id <= {sql.ph})")
        params.extend([*d.dispute_types, watermark])
    return " AND ".join(clauses)


def _window(sql: _Sql, customers: Sequence[str] | None, start_us: int, end_us: int, watermark: int,
            params: list) -> str:
    clauses = [f"e.ts >= {sql.ph}", f"e.ts < {sql.ph}", f"e.id <= {sql.ph}"]
    params.extend([start_us, end_us, watermark])
    if customers is not None:
        clauses.append(f"e.customer_id IN ({','.join([sql.ph] * len(customers))})")
        params.extend(customers)
    return " AND ".join(clauses)


def _where(sql: _Sql, meter: Meter, customers: Sequence[str] | None, start_us: int, end_us: int, watermark: int,
           params: list) -> str:
    """The WHERE clause selecting a meter's events (of ``customers``, or of everyone in the
    window when None); appends its parameters in order."""
    window = _window(sql, customers, start_us, end_us, watermark, params)
    return window + " AND " + _meter_condition(sql, meter, watermark, params)


def _is_simple(plan: Plan, meter: Meter) -> bool:
    """Meters a single conditional-aggregate pass can compute."""
    return (meter.multipliers is None and meter.disputes is None and meter.aggregation in ("count", "sum", "max")
            and meter.key not in plan.compiled.group_meters
            and not any(c.meter == meter.key and isinstance(c.price, PercentagePrice) and needs_transactions(c.price)
                        for c in plan.charges))


def aggregate_window(conn: Connection, plan: Plan, customers: Sequence[str], start_us: int, end_us: int,
                     watermark: int) -> tuple[dict[str, dict[str, MeterTotals]], dict[str, Decimal]]:
    """Every meter of ``plan`` and the total provider cost, per customer, over [start, end).

    Simple meters share ONE pass over the window (conditional aggregates) with the cost;
    meters with multipliers, disputes, unique counts, value aggregations (``level_sql``) or
    per-transaction pricing get their own."""
    sql = _Sql(conn.dialect.name)
    customers = list(customers)
    scan = len(customers) > _CHUNK
    wanted = set(customers)
    usage: dict[str, dict[str, MeterTotals]] = {c: {} for c in customers}
    costs: dict[str, Decimal] = {}
    simple = [m for m in plan.meters if _is_simple(plan, m)]

    def query(split: bool) -> list[tuple]:
        params: list = []
        columns = ["e.customer_id", sum_sql("e.cost_pico", split)]
        for meter in simple:
            cond_params: list = []
            cond = _meter_condition(sql, meter, watermark, cond_params)
            value = "1" if meter.aggregation == "count" else sql.number(meter.property)
            if meter.aggregation == "max":
                columns.append(f"0, 0, MAX(CASE WHEN {cond} THEN {value} END)")
                params.extend(cond_params)
            else:
                column, column_params = sum_sql_params(f"CASE WHEN {cond} THEN {value} END", cond_params, split)
                columns.append(column)
                params.extend(column_params)
            columns.append(f"SUM(CASE WHEN {cond} THEN 1 ELSE 0 END)")
            params.extend(cond_params)
            column, column_params = sum_sql_params(f"CASE WHEN {cond} THEN e.cost_pico ELSE 0 END", cond_params, split)
            columns.append(column)
            params.extend(column_params)
        where = _window(sql, None if scan else customers, start_us, end_us, watermark, params)
        run(cursor, f"SELECT {', '.join(columns)} FROM usage_event e WHERE {where} GROUP BY e.customer_id", params)
        return cursor.fetchall()

    cursor = conn.connection.driver_connection.cursor()
    try:
        for row in exact_sums(query):
            customer = row[0]
            if customer not in wanted:
                continue
            costs[customer] = Decimal(summed(*row[1:4])) / PICO
            for n, meter in enumerate(simple):  # 7 columns a meter: value (3), events, cost (3)
                at = 4 + 7 * n
                raw, events, cost = summed(*row[at:at + 3]), row[at + 3], summed(*row[at + 4:at + 7])
                units = Decimal(raw) if meter.aggregation == "count" else sql.scale(raw)
                usage[customer][meter.key] = MeterTotals(units, int(events or 0), Decimal(cost) / PICO)
        for customer in customers:
            costs.setdefault(customer, Decimal(0))
            for meter in simple:
                usage[customer].setdefault(meter.key, MeterTotals())
        for meter in plan.meters:
            if meter not in simple:
                _one_meter(cursor, sql, plan, meter, customers, start_us, end_us, watermark, usage, scan=scan)
    finally:
        cursor.close()
    return usage, costs


def aggregate_meters(conn: Connection, plan: Plan, customers: Sequence[str], start_us: int, end_us: int,
                     watermark: int) -> dict[str, dict[str, MeterTotals]]:
    """customer -> meter key -> totals over [start, end), for events with id <= watermark."""
    sql = _Sql(conn.dialect.name)
    out: dict[str, dict[str, MeterTotals]] = {c: {} for c in customers}
    cursor = conn.connection.driver_connection.cursor()
    try:
        if len(customers) > _CHUNK:  # many customers: one scan of the window per meter
            for meter in plan.meters:
                _one_meter(cursor, sql, plan, meter, list(customers), start_us, end_us, watermark, out, scan=True)
        else:
            for meter in plan.meters:
                _one_meter(cursor, sql, plan, meter, list(customers), start_us, end_us, watermark, out)
    finally:
        cursor.close()
    return out


def _one_meter(cursor, sql: _Sql, plan: Plan, meter: Meter, chunk: list[str], start_us: int, end_us: int,
               watermark: int, out: dict[str, dict[str, MeterTotals]], scan: bool = False) -> None:
    params: list = []
    where = _where(sql, meter, None if scan else chunk, start_us, end_us, watermark, params)
    mult = meter.multipliers
    group = sql.text(mult.property) if mult and meter.aggregation != "unique_count" else None
    by_value = plan.compiled.group_meters.get(meter.key)  # a dimension price: totals per value
    if by_value is not None:  # (its meter is a plain count or sum: no multipliers)
        group = sql.text(by_value)
    groups: dict[str, dict[str | None, list]] = defaultdict(dict)

    def query(split: bool) -> list[tuple]:
        if meter.aggregation == "count":
            value = "0, 0, COUNT(*)"
        elif meter.aggregation == "sum":
            value = sum_sql(sql.number(meter.property), split)
        elif meter.aggregation == "max":
            value = f"0, 0, MAX({sql.number(meter.property)})"
        elif meter.aggregation in VALUE_AGGREGATIONS:
            value = "0, 0, 0"  # its units come from level_sql (events, cost: here)
        else:
            value = f"0, 0, COUNT(DISTINCT {sql.text(meter.property)})"
        run(cursor, f"SELECT e.customer_id, {group or 'NULL'} AS k, {value}, COUNT(*), {sum_sql('e.cost_pico', split)} "
                    f"FROM usage_event e WHERE {where} GROUP BY e.customer_id{', ' + group if group else ''}", params)
        return cursor.fetchall()

    acc: dict[str, list] = defaultdict(lambda: [Decimal(0), 0, 0])
    wanted = set(chunk) if scan else None
    for customer, key, v1, v2, v3, events, c1, c2, c3 in exact_sums(query):
        if wanted is not None and customer not in wanted:
            continue
        raw, cost = summed(v1, v2, v3), summed(c1, c2, c3)
        if meter.aggregation == "count":
            units = Decimal(raw)
        elif meter.aggregation == "unique_count":
            units = Decimal(raw)
        else:
            units = sql.scale(raw)
        if mult is not None and meter.aggregation != "unique_count":
            factor = mult.values.get(key, mult.default) if key is not None else mult.default
            units *= factor
        if by_value is not None:
            groups[customer][key] = [units, int(cost or 0), int(events)]
        slot = acc[customer]
        slot[0] = max(slot[0], units) if meter.aggregation == "max" else slot[0] + units
        slot[1] += int(events)
        slot[2] += int(cost or 0)
    transactions = _transactions(cursor, sql, plan, meter, chunk, start_us, end_us, watermark) if not scan else \
        _transactions_chunked(cursor, sql, plan, meter, chunk, start_us, end_us, watermark)
    valued = None
    if meter.aggregation in VALUE_AGGREGATIONS:
        condition_params: list = []
        condition = _meter_condition(sql, meter, watermark, condition_params)
        valued = level_units(cursor, sql, meter, chunk, start_us, end_us, watermark, condition, condition_params)
    for customer in chunk:
        units, events, cost = acc.get(customer, (Decimal(0), 0, 0))
        if valued is not None:  # a time-weighted sum may have units without an event in the window
            units = valued.get(customer, Decimal(0))
        found = sorted(groups.get(customer, {}).items(), key=lambda g: (g[0] is None, g[0] or ""))
        out[customer][meter.key] = MeterTotals(units.normalize() if units else Decimal(0), events,
                                               Decimal(cost) / PICO, transactions.get(customer, ()),
                                               tuple((v, u.normalize() if u else Decimal(0), Decimal(c) / PICO, n)
                                                     for v, (u, c, n) in found))


def _transactions(cursor, sql: _Sql, plan: Plan, meter: Meter, chunk: list[str], start_us: int, end_us: int,
                  watermark: int) -> dict[str, tuple[Decimal, ...]]:
    """Per-event values in time order, only for meters priced by percentage with per-transaction rules."""
    wanted = any(c.meter == meter.key and isinstance(c.price, PercentagePrice) and needs_transactions(c.price)
                 for c in plan.charges)
    if not wanted or meter.aggregation != "sum":
        return {}
    params: list = []
    where = _where(sql, meter, chunk, start_us, end_us, watermark, params)
    mult = meter.multipliers
    # events without the property are no transaction (as in billing.rating.meters.aggregate)
    run(cursor, f"SELECT e.customer_id, {sql.number(meter.property)}, {sql.text(mult.property) if mult else 'NULL'} "
                   f"FROM usage_event e WHERE {where} AND {sql.number(meter.property)} IS NOT NULL "
                   f"ORDER BY e.customer_id, e.ts, e.event_id", params)
    out: dict[str, list[Decimal]] = defaultdict(list)
    for customer, raw, key in cursor.fetchall():
        factor = (mult.values.get(key, mult.default) if key is not None else mult.default) if mult else 1
        out[customer].append(sql.scale(raw) * factor)
    return {c: tuple(v) for c, v in out.items()}


def _transactions_chunked(cursor, sql, plan, meter, customers, start_us, end_us, watermark):
    out: dict[str, tuple[Decimal, ...]] = {}
    for i in range(0, len(customers), _CHUNK):
        out.update(_transactions(cursor, sql, plan, meter, customers[i:i + _CHUNK], start_us, end_us, watermark))
    return out


def max_event_id(conn: Connection) -> int:
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute("SELECT COALESCE(MAX(id), 0) FROM usage_event")
        return int(cursor.fetchone()[0])
    finally:
        cursor.close()


def usage_before_expiries(conn, plan: Plan, customer: str, period: Period, start: datetime, end: datetime,
                          grants, watermark: int) -> dict[datetime, dict[str, MeterTotals]]:
    """The usage of the window [start, end) up to each grant's expiry inside it, for the
    rating rule that a grant expiring mid-period covers only the usage before its expiry
    (empty usage when it expired before the window; nothing needed when it outlives it)."""
    out: dict[datetime, dict[str, MeterTotals]] = {}
    for grant, balance in grants:
        t = grant.expires_at
        if balance <= 0 or t is None or not period.start < t < period.end or t >= end or t in out:
            continue
        if t <= start:
            out[t] = {}
            continue
        totals, _ = aggregate_window(conn, plan, [customer], to_us(start), to_us(t), watermark)
        out[t] = totals[customer]
    return out
