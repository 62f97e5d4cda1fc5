"""A customer's budgets in the quota's reads (``billing.quota.budgets`` is the rule).

* The budgets come with the customer's context (``reservations.sql._CONTEXT_SQL`` joins
  them to the customer row): a customer without budgets costs no query, and the context
  cache (``Quota.context_ttl``) keeps them.
* A customer-wide budget over the billing period reads nothing more: its measure is the
  period's counters, read for the decision anyway (``budgets.from_counters``).
* Every other budget reads its scope's events in its window in ONE extra statement per
  customer (``budget_query``, pipelined with the state statement on PostgreSQL): per budget
  the provider cost (``cost``), the meter's units (``units``), or every charged meter's
  units over the window within the period (``billed``: the period's spend with them less
  the spend without them, ``budget_usage``); and the live holds' parts in each budget
  (``quota_hold.budgets``), so concurrent reservations see each other.

The events are found by the customer's own rows (``ts + 0``: not the all-customers time
index); hourly rollups may replace the read of the events later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from billing.quota.budgets import LIST_PROPERTIES, Budget, BudgetUse, from_counters, window
from billing.quota.decide import MeterUsage, UsageState
from billing.store.aggregate_sql import _meter_condition, _Sql
from billing.store.types import to_us

MICRO = Decimal(1_000_000)
PICO = Decimal(10) ** 12
ZERO = Decimal(0)
SEP = "\x1f"
_EVERY_EVENT = 2 ** 62
BUDGET_COLUMNS = ("b.id, b.name, b.measure, b.amount, b.reset_window, b.enforcement, b.policy, b.scope_property, "
                  "b.scope_value, b.meter, b.model, b.timezone")
_PARSED: dict[tuple, tuple[Budget, ...]] = {}


def budgets_of(rows: Sequence[Sequence[Any]]) -> tuple[Budget, ...]:
    """The budgets of the context's customer rows (columns 2.. are ``BUDGET_COLUMNS``), by id."""
    key = tuple(tuple(r[2:]) for r in rows)
    hit = _PARSED.get(key)
    if hit is None:
        if len(_PARSED) > 10_000:
            _PARSED.clear()
        hit = _PARSED[key] = tuple(sorted(
            (Budget(int(r[0]), r[1], r[2], Decimal(r[3]), r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11])
             for r in key), key=lambda b: b.id))
    return hit


def event_budgets(ctx: Any) -> tuple[Budget, ...]:
    return tuple(b for b in ctx.budgets if not from_counters(b))


def _scope(sql: _Sql, budget: Budget, params: list) -> str:
    if budget.scope_property is None:
        return "1 = 1"
    prop, ph = budget.scope_property, sql.ph
    params.append(budget.scope_value)
    if prop in LIST_PROPERTIES:
        if sql.pg:
            return (f"EXISTS (SELECT 1 FROM json_array_elements_text(CASE json_typeof(e.properties->'{prop}') "
                    f"WHEN 'array' THEN e.properties->'{prop}' ELSE '[]'::json END) AS t(v) WHERE t.v = {ph})")
        return (f"EXISTS (SELECT 1 FROM json_each(CASE json_type(e.properties, '$.{prop}') WHEN 'array' "
                f"THEN json_extract(e.properties, '$.{prop}') ELSE '[]' END) AS t WHERE CAST(t.value AS TEXT) = {ph})")
    return f"{sql.text(prop)} = {ph}"


def budget_query(pg: bool, ctx: Any, now: datetime) -> tuple[str, list[Any]] | None:
    """One statement reading the customer's event-read budgets (None: it has none). Rows:
    ``('e', '<budget id><SEP><meter>[<SEP><group>]', value, cost_pico, events)`` and
    ``('h', quota_hold.budgets, created_at, 0, 0)`` per live hold counting against any."""
    budgets = event_budgets(ctx)
    if not budgets:
        return None
    sql = _Sql("postgresql" if pg else "sqlite")
    ph = sql.ph
    plan = ctx.plan
    parts: list[str] = []
    params: list[Any] = []
    for b in budgets:
        start, end = window(b, now, ctx.timezone, ctx.period.start, ctx.period.end)
        if b.measure == "billed":  # the window's usage within the current period
            start, end = max(start, ctx.period.start), min(end, ctx.period.end)
        where = f"e.customer_id = {ph} AND e.ts + 0 >= {ph} AND e.ts + 0 < {ph}"
        if b.measure == "cost":
            p = [ctx.customer, to_us(start), to_us(end)]
            scope = _scope(sql, b, p)
            parts.append(f"SELECT 'e', '{b.id}{SEP}*', COUNT(*), COALESCE(SUM(e.cost_pico), 0), COUNT(*) "
                         f"FROM usage_event e WHERE {where} AND {scope}")
            params += p
            continue
        keys = [b.meter] if b.measure == "units" else list(plan.compiled.charged_meters)
        for key in keys:
            meter = plan.compiled.meter_by_key.get(key)
            if meter is None:  # a meter the plan no longer has: nothing counts
                continue
            p = [ctx.customer, to_us(start), to_us(end)]
            scope = _scope(sql, b, p)
            cond = _meter_condition(sql, meter, _EVERY_EVENT, p)
            mult = meter.multipliers
            group = sql.text(mult.property) if mult else None
            if meter.aggregation == "sum":
                value = f"COALESCE(SUM({sql.number(meter.property)}), 0)"
            elif meter.aggregation == "unique_count":
                value = f"COUNT(DISTINCT {sql.text(meter.property)})"
                group = None
            else:
                value = "COUNT(*)"
            label = f"'{b.id}{SEP}{key}'" if group is None else \
                f"(CASE WHEN {group} IS NULL THEN '{b.id}{SEP}{key}' ELSE '{b.id}{SEP}{key}{SEP}' || {group} END)"
            grouping = f" GROUP BY {group}" if group is not None else ""
            parts.append(f"SELECT 'e', {label}, {value}, COALESCE(SUM(e.cost_pico), 0), COUNT(*) "
                         f"FROM usage_event e WHERE {where} AND {scope} AND {cond}{grouping}")
            params += p
    parts.append(f"SELECT 'h', budgets, created_at, 0, 0 FROM quota_hold WHERE customer_id = {ph} "
                 f"AND status = 'held' AND expires_at > {ph} AND budgets IS NOT NULL")
    params += [ctx.customer, to_us(now)]
    return " UNION ALL ".join(parts), params


def budget_usage(ctx: Any, now: datetime, usage: Mapping[str, MeterUsage], rows: Sequence[Sequence[Any]] | None
                 ) -> tuple[BudgetUse, ...]:
    """The customer's budgets with their windows and usage: committed events (``rows`` of
    ``budget_query``) plus live holds' parts; ``from_counters`` budgets with ``used`` None
    (the decision reads the counters). ``rows`` None: only those."""
    from billing.quota.usage import charge_spends

    plan = ctx.plan
    per_meter: dict[int, dict[str, list]] = {}
    cost: dict[int, int] = {}
    held: dict[int, list[tuple[int, Decimal]]] = {}
    for kind, key, value, cost_pico, n in rows or ():
        if kind == "h":
            for bid, part in orjson.loads(key).items():
                held.setdefault(int(bid), []).append((int(value), Decimal(part)))
            continue
        bid_text, _, rest = key.partition(SEP)
        bid = int(bid_text)
        meter_key, sep, group = rest.partition(SEP)
        if meter_key == "*":
            cost[bid] = cost.get(bid, 0) + int(cost_pico or 0)
            continue
        meter = plan.compiled.meter_by_key[meter_key]
        units = (Decimal(value) / MICRO if isinstance(value, int) else Decimal(value)) \
            if meter.aggregation == "sum" else Decimal(value or 0)
        mult = meter.multipliers
        if mult is not None and meter.aggregation != "unique_count":
            units *= (mult.values.get(group, mult.default) if sep else mult.default)
        slot = per_meter.setdefault(bid, {}).setdefault(meter_key, [ZERO, 0, 0])
        slot[0] += units
        slot[1] += int(cost_pico or 0)
        slot[2] += int(n or 0)
    out = []
    for b in ctx.budgets:
        start, end = window(b, now, ctx.timezone, ctx.period.start, ctx.period.end)
        if from_counters(b):
            out.append(BudgetUse(b, start, end, None))
            continue
        if rows is None:
            continue
        since = to_us(start)
        used = sum((part for at, part in held.get(b.id, ()) if at >= since), ZERO)
        meters = per_meter.get(b.id, {})
        if b.measure == "cost":
            used += Decimal(cost.get(b.id, 0)) / PICO
        elif b.measure == "units":
            used += meters.get(b.meter, [ZERO])[0]
        else:
            scope = {k: MeterUsage(u, Decimal(c) / PICO, n) for k, (u, c, n) in meters.items()}
            used += scoped_billed(plan, usage, scope, ctx.seats, now, ctx.period, charge_spends)
        out.append(BudgetUse(b, start, end, used))
    return tuple(out)


def scoped_billed(plan: Any, usage: Mapping[str, MeterUsage], scope: Mapping[str, MeterUsage], seats: int,
                  now: datetime, period: Any, charge_spends: Any) -> Decimal:
    """What the invoice bills for ``scope``'s usage: the period's usage spend (the one charge
    arithmetic, ``quota.usage.charge_spends``) less the spend without ``scope``."""
    if not scope:
        return ZERO

    def spend(u: Mapping[str, MeterUsage]) -> Decimal:
        state = UsageState(now=now, period_start=period.start, period_end=period.end, usage=u, seats=seats)
        return sum((c.spend for c in charge_spends(plan, state)), ZERO)

    without = {}
    for key, m in usage.items():
        s = scope.get(key)
        without[key] = m if s is None else MeterUsage(max(ZERO, m.units - s.units), max(ZERO, m.cost - s.cost),
                                                      max(0, m.events - s.events))
    return max(ZERO, spend(usage) - spend(without))


def held_budgets(ctx: Any, decision: Any) -> str | None:
    """``quota_hold.budgets`` of a grant: its part in each event-read budget it counts against
    (None: none; a ``from_counters`` budget counts the hold's units and cost already)."""
    if not decision.budget_parts:
        return None
    read = {b.id for b in ctx.budgets if not from_counters(b)}
    parts = {str(bid): f"{part:f}" for bid, part in decision.budget_parts if bid in read}
    return orjson.dumps(parts).decode() if parts else None
