"""A plan's meter totals from the hourly rollups, for the reports that rate windows to date
(margins' open periods, forecasts: ``rate_windows``' ``from_counters`` hook) and for the
history simulation's totals under candidate plans (``rollup_measure``).

Exact where the rollups answer the question (``billing.ledger.rollups``): every meter of the
plan is a plain ``count``, or a ``sum`` of a token count (no multipliers, disputes,
per-transaction or per-value prices), its filters name only ``model`` or rolled-up
dimensions; the window's whole hours come from the rollups and its edges from the events
(``aggregate_window``); a customer whose rows hold an inexact key (``odd``) for a filtered
meter, or a token value left out (``rounded``) for a summed one, gets None (the events).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, bindparam, text

from billing.catalog import Meter, Plan
from billing.invoicing.windows import Window
from billing.ledger.rollups import HOUR_US
from billing.rating.types import MeterTotals
from billing.store import rollup_sql
from billing.store.aggregate_sql import aggregate_window
from billing.store.types import to_us
from billing.store.wide import WIDE, exact_sums, sum_sql, summed

PICO = Decimal(10) ** 12
Usage = tuple[dict[str, MeterTotals], Decimal]


def countable(plan: Plan, dims: Sequence[str]) -> bool:
    """Every meter of the plan can be read from the rollups."""
    from billing.invoicing.usage import plan_is_countable

    if not plan_is_countable(plan):
        return False
    for m in plan.meters:
        if m.aggregation == "max" or (m.aggregation == "sum" and m.property not in rollup_sql.TOKENS):
            return False
        if any(prop != "model" and prop not in dims for prop, _op, _operand in m._filter_rules):
            return False
    return True


def _condition(dialect: str, meter: Meter, params: dict, n: int) -> str:
    """SQL selecting the rollup rows of a meter's events (``aggregate_sql._meter_condition`` over rollups)."""
    params[f"t{n}"] = meter.event_type
    clauses = [f"type = :t{n}"]
    for j, (prop, op, operand) in enumerate(meter._filter_rules):
        value = "NULLIF(model, '')" if prop == "model" else rollup_sql.key_sql(dialect, prop)
        if op == "exists":
            clauses.append(f"{value} IS {'NOT NULL' if operand else 'NULL'}")
            continue
        names = []
        for k, option in enumerate(sorted(operand)):  # type: ignore[arg-type]
            names.append(f":f{n}_{j}_{k}")
            params[names[-1][1:]] = option
        listed = f"{value} IN ({','.join(names)})"
        clauses.append(listed if op == "in" else f"({value} IS NULL OR NOT {listed})")
    return " AND ".join(clauses)


def _rollup_totals(conn: Connection, plan: Plan, customers: Sequence[str], a: int, b: int
                   ) -> dict[str, Usage | None]:
    """customer -> (meter totals, provider cost) over the whole hours [a, b) (None: not exact)."""
    dialect = conn.dialect.name
    params: dict = {"a": a, "b": b}
    conditions = [_condition(dialect, m, params, n) for n, m in enumerate(plan.meters)]

    def query(split: bool, part: list[str]) -> list:
        cols = [sum_sql("cost_pico", split), "SUM(cost_carry)", "SUM(odd)", "SUM(rounded)"]
        for m, cond in zip(plan.meters, conditions):
            units = "events" if m.aggregation == "count" else m.property
            cols += [f"SUM(CASE WHEN {cond} THEN events ELSE 0 END)", sum_sql(f"CASE WHEN {cond} THEN {units} END", split),
                     sum_sql(f"CASE WHEN {cond} THEN cost_pico END", split),
                     f"SUM(CASE WHEN {cond} THEN cost_carry ELSE 0 END)"]
        stmt = text(f"SELECT customer_id, {', '.join(cols)} FROM usage_rollup WHERE hour >= :a AND hour < :b "
                    f"AND customer_id IN :ids GROUP BY customer_id").bindparams(bindparam("ids", expanding=True))
        return conn.execute(stmt, {**params, "ids": part}).all()

    filtered = any(m._filter_rules for m in plan.meters)
    summed_tokens = any(m.aggregation == "sum" for m in plan.meters)
    out: dict[str, Usage | None] = {}
    ids = sorted(set(customers))
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        for row in exact_sums(lambda split, part=part: query(split, part)):
            customer, (h, mid, lo, carry, odd, rounded) = row[0], row[1:7]
            if (odd and filtered) or (rounded and summed_tokens):
                out[customer] = None
                continue
            meters = {}
            for n, m in enumerate(plan.meters):
                at = 7 + 8 * n
                events = int(row[at] or 0)
                units = Decimal(int(summed(*row[at + 1:at + 4])))
                cost = int(summed(*row[at + 4:at + 7])) + int(row[at + 7] or 0) * WIDE
                meters[m.key] = MeterTotals(units, events, Decimal(cost) / PICO)
            out[customer] = (meters, Decimal(int(summed(h, mid, lo)) + int(carry or 0) * WIDE) / PICO)
    for customer in ids:
        out.setdefault(customer, ({m.key: MeterTotals() for m in plan.meters}, Decimal(0)))
    return out


def rollup_counters(conn: Connection, windows: Sequence[Window], watermark: int
                    ) -> Callable[[Window], Usage | None] | None:
    """A ``from_counters`` for ``rate_windows``: the usage of each of ``windows`` whose plan the
    rollups can count (None when the rollups are stale or count none of them)."""
    found = _measured(conn, [(w.plan, w.customer, w.start, w.rated_until) for w in windows], watermark)

    def lookup(w: Window) -> Usage | None:
        return found.get((id(w.plan), w.customer, w.start, w.rated_until))

    return lookup if found else None


def rollup_measure(conn: Connection, spans: Sequence, watermark: int) -> list[Usage | None]:
    """``billing.invoicing.windows.measure`` from the rollups: each span's usage, or None where
    the rollups do not count it exactly (measure those from the events)."""
    found = _measured(conn, [(s.plan, s.customer, s.start, s.until) for s in spans], watermark)
    return [found.get((id(s.plan), s.customer, s.start, s.until)) for s in spans]


def _measured(conn: Connection, spans: Sequence[tuple[Plan, str, datetime, datetime]], watermark: int
              ) -> dict[tuple, Usage | None]:
    """(id(plan), customer, start, until) -> usage of the spans the rollups count."""
    if not spans or rollup_sql.stale(conn):
        return {}
    dims = rollup_sql.dimensions(conn)
    groups: dict[tuple, list[tuple]] = {}
    for span in spans:
        if countable(span[0], dims):
            groups.setdefault((id(span[0]), span[2], span[3]), []).append(span)
    found: dict[tuple, Usage | None] = {}
    for members in groups.values():
        plan, _, start, until = members[0]
        customers = sorted({m[1] for m in members})
        s, e = to_us(start), to_us(until)
        a, b = -(-s // HOUR_US) * HOUR_US, e // HOUR_US * HOUR_US
        if a >= b:
            continue
        usage = _rollup_totals(conn, plan, customers, a, b)
        for lo, hi in ((s, a), (b, e)):  # the edges: from the events
            if lo < hi:
                meters, costs = aggregate_window(conn, plan, customers, lo, hi, watermark)
                for c in customers:
                    got = usage.get(c)
                    if got is not None:
                        usage[c] = ({k: t + meters[c][k] for k, t in got[0].items()}, got[1] + costs[c])
        for c in customers:
            found[(id(plan), c, start, until)] = usage.get(c)
    return found


__all__ = ["countable", "rollup_counters", "rollup_measure"]
