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
from billing.store.wide import join

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


class _Windows:
    """A context's budgets with their windows at some instant, valid while ``lo <= now < hi``
    (the windows reset at ``hi``), and the statement reading them (built once)."""

    __slots__ = ("ctx", "lo", "hi", "bounds", "events", "key", "sql", "params", "after", "now_at", "additive")

    def __init__(self, ctx: Any, now: datetime) -> None:
        self.ctx = ctx
        self.bounds = {b.id: window(b, now, ctx.timezone, ctx.period.start, ctx.period.end) for b in ctx.budgets}
        self.lo = max(to_us(start) for start, _ in self.bounds.values())
        self.hi = min(to_us(end) for _, end in self.bounds.values())
        self.events = event_budgets(ctx)
        self.key = (id(ctx.plan), to_us(ctx.period.start), tuple((b.id, to_us(self.bounds[b.id][0]))
                                                                   for b in self.events))
        self.sql: dict[bool, tuple[str, list, list[int], int]] = {}
        self.additive = _additive(ctx)


_WINDOWS: dict[int, _Windows] = {}


def windows_of(ctx: Any, now: datetime) -> _Windows:
    """The context's budget windows at ``now`` (computed once per context and window)."""
    hit = _WINDOWS.get(id(ctx))
    now_us = to_us(now)
    if hit is None or hit.ctx is not ctx or not hit.lo <= now_us < hit.hi:
        if len(_WINDOWS) > 100_000:
            _WINDOWS.clear()
        hit = _WINDOWS[id(ctx)] = _Windows(ctx, now)
    return hit


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


def budget_query(pg: bool, ctx: Any, now: datetime, after_id: int = 0) -> tuple[str, list[Any]] | None:
    w = windows_of(ctx, now)
    if not w.events:
        return None
    built = w.sql.get(pg)
    if built is None:
        built = w.sql[pg] = _statement(pg, ctx, w)
    sql, template, after_slots, now_slot = built
    params = list(template)
    for i in after_slots:
        params[i] = after_id
    params[now_slot] = to_us(now)
    return sql, params


_AFTER, _NOW = object(), object()  # the parameters a statement gets on each run


def _statement(pg: bool, ctx: Any, w: _Windows) -> tuple[str, list, list[int], int]:
    """One statement reading the customer's event-read budgets (None: it has none): the
    events with ``id > after_id`` only (0: all; ``BudgetReader`` adds them to what it read
    before). Rows: ``('e', '<budget id><SEP><meter>[<SEP><group>]', value, cost_pico,
    events)``; ``('h', quota_hold.budgets, created_at, 0, 0)`` per live hold counting against
    any; and, read in the same snapshot to tell whether the events read are all of them,
    ``('n', '', events, cost_pico, cost_carry)`` of the period's all-events counter,
    ``('c', '', count, cost_pico, 0)`` of the events read in the period and
    ``('m', '', max id, 0, 0)`` of the events read."""
    budgets = w.events
    after_id = _AFTER
    sql = _Sql("postgresql" if pg else "sqlite")
    ph = sql.ph
    plan = ctx.plan
    parts: list[str] = []
    params: list[Any] = []
    p0, p1 = to_us(ctx.period.start), to_us(ctx.period.end)
    where = f"e.customer_id = {ph} AND e.id > {ph} AND e.ts + 0 >= {ph} AND e.ts + 0 < {ph}"
    for b in budgets:
        start, end = w.bounds[b.id]
        if b.measure == "billed":  # the window's usage within the current period
            start, end = max(start, ctx.period.start), min(end, ctx.period.end)
        if b.measure == "cost":
            p = [ctx.customer, after_id, to_us(start), to_us(end)]
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
            p = [ctx.customer, after_id, to_us(start), to_us(end)]
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
    parts.append(f"SELECT 'n', '', events, cost_pico, cost_carry FROM usage_counter WHERE customer_id = {ph} "
                 f"AND meter = '*' AND period_start = {ph}")
    parts.append(f"SELECT 'c', '', COUNT(*), COALESCE(SUM(e.cost_pico), 0), 0 FROM usage_event e "
                 f"WHERE {where}")
    parts.append(f"SELECT 'm', '', COALESCE(MAX(e.id), 0), 0, 0 FROM usage_event e "
                 f"WHERE e.customer_id = {ph} AND e.id > {ph}")
    params += [ctx.customer, _NOW, ctx.customer, p0, ctx.customer, after_id, p0, p1, ctx.customer, after_id]
    return (" UNION ALL ".join(parts), params, [i for i, v in enumerate(params) if v is _AFTER],
            params.index(_NOW))


class BudgetReader:
    """The committed part of a customer's event-read budgets, read once and then only the
    events stored since (``id`` above the last one read), per process.

    An entry holds, from one statement's snapshot, the budgets' event rows, the last event id
    read and the period's all-events counter (events, cost). A later statement reads the
    events past that id with the counter again: when the counter moved by exactly what those
    events add, no event below the id arrived since (a transaction that committed late) and
    none was re-costed, so the entry plus them is what a full read would give; otherwise (and
    for a new window, period or plan) the full read runs again. Live holds are read every time.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple] = {}  # customer -> (key, last id, events, cost, {label: [v, c, n]})

    def statement(self, pg: bool, ctx: Any, now: datetime) -> tuple[tuple[str, list[Any]] | None, Any]:
        """The statement to run now and the token ``rows`` takes back with its rows."""
        w = windows_of(ctx, now)
        key = w.key
        entry = self._entries.get(ctx.customer)
        if entry is not None and (entry[0] != key or not w.additive):
            entry = None
        return budget_query(pg, ctx, now, entry[1] if entry is not None else 0), (key, entry)

    def rows(self, ctx: Any, token: Any, found: Sequence[Sequence[Any]]) -> list[tuple] | None:
        """``budget_usage``'s rows: the entry's events plus ``found``'s; None when the entry
        cannot be trusted (run ``statement`` again: it reads everything then)."""
        key, entry = token
        events: dict[str, list] = {} if entry is None else {k: list(v) for k, v in entry[4].items()}
        holds, total, delta, last = [], (0, 0), (0, 0), 0
        for row in found:
            kind = row[0]
            if kind == "e":
                slot = events.get(row[1])
                if slot is None:
                    events[row[1]] = [row[2], row[3], row[4]]
                else:
                    slot[0] += row[2]
                    slot[1] += row[3]
                    slot[2] += row[4]
            elif kind == "h":
                holds.append(tuple(row))
            elif kind == "n":
                total = (int(row[2]), join(row[4], row[3]))
            elif kind == "c":
                delta = (int(row[2]), int(row[3]))
            elif kind == "m":
                last = int(row[2])
        if entry is not None:
            if (entry[2] + delta[0], entry[3] + delta[1]) != total:
                self._entries.pop(ctx.customer, None)
                return None
            last = max(last, entry[1])
        if len(self._entries) > 100_000:
            self._entries.clear()
        self._entries[ctx.customer] = (key, last, total[0], total[1], events)
        return [("e", k, v, c, n) for k, (v, c, n) in events.items()] + holds

    def forget(self, customer: str | None = None) -> None:
        if customer is None:
            self._entries.clear()
        else:
            self._entries.pop(customer, None)


def _additive(ctx: Any) -> bool:
    """Whether the budgets' event rows add up over disjoint sets of events (no unique count)."""
    by_key = ctx.plan.compiled.meter_by_key
    return not any(m.aggregation not in ("count", "sum") for b in event_budgets(ctx) if b.measure != "cost"
                   for k in ([b.meter] if b.measure == "units" else ctx.plan.compiled.charged_meters)
                   if (m := by_key.get(k)) is not None)


def budget_usage(ctx: Any, now: datetime, usage: Mapping[str, MeterUsage], rows: Sequence[Sequence[Any]] | None
                 ) -> tuple[BudgetUse, ...]:
    """The customer's budgets with their windows and usage: committed events (``rows`` of
    ``budget_query``) plus live holds' parts; ``from_counters`` budgets with ``used`` None
    (the decision reads the counters). ``rows`` None: only those."""
    from billing.quota.usage import charge_spends

    plan = ctx.plan
    w = windows_of(ctx, now)
    if rows is not None:  # the same rows and usage as a moment ago: the same answer
        memo = (w.key, tuple(rows), _usage_key(plan, usage) if any(b.measure == "billed" for b in w.events) else ())
        hit = _USES.get(id(ctx))
        if hit is not None and hit[0] is ctx and hit[1] == memo:
            return hit[2]
    per_meter: dict[int, dict[str, list]] = {}
    cost: dict[int, int] = {}
    held: dict[int, list[tuple[int, Decimal]]] = {}
    for kind, key, value, cost_pico, n in rows or ():
        if kind not in ("e", "h"):
            continue
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
    bounds = w.bounds
    for b in ctx.budgets:
        start, end = bounds[b.id]
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
    if rows is not None:
        if len(_USES) > 100_000:
            _USES.clear()
        _USES[id(ctx)] = (ctx, memo, tuple(out))
    return tuple(out)


_USES: dict[int, tuple] = {}  # id(ctx) -> (ctx, what budget_usage read, its answer)


def _usage_key(plan: Any, usage: Mapping[str, MeterUsage]) -> tuple:
    get = usage.get
    return tuple((k, m.units, m.cost, m.events) if (m := get(k)) is not None else None
                 for k in plan.compiled.charged_meters)


def scoped_billed(plan: Any, usage: Mapping[str, MeterUsage], scope: Mapping[str, MeterUsage], seats: int,
                  now: datetime, period: Any, charge_spends: Any) -> Decimal:
    """What the invoice bills for ``scope``'s usage: the period's usage spend (the one charge
    arithmetic, ``quota.usage.charge_spends``) less the spend without ``scope``."""
    if not scope:
        return ZERO
    key = (id(plan), seats, period.start, tuple(sorted((k, m.units, m.cost, m.events) for k, m in scope.items())),
           tuple((k, m.units, m.cost, m.events) for k, m in usage.items() if k in scope))
    hit = _BILLED.get(key)
    if hit is not None and hit[0] is plan:
        return hit[1]

    def spend(u: Mapping[str, MeterUsage]) -> Decimal:
        state = UsageState(now=now, period_start=period.start, period_end=period.end, usage=u, seats=seats)
        return sum((c.spend for c in charge_spends(plan, state)), ZERO)

    without = {}
    for key, m in usage.items():
        s = scope.get(key)
        without[key] = m if s is None else MeterUsage(max(ZERO, m.units - s.units), max(ZERO, m.cost - s.cost),
                                                      max(0, m.events - s.events))
    found = max(ZERO, spend(usage) - spend(without))
    if len(_BILLED) > 10_000:
        _BILLED.clear()
    _BILLED[key] = (plan, found)
    return found


_BILLED: dict[tuple, tuple[Any, Decimal]] = {}  # scoped_billed's answers (the same usage: the same amount)


def held_budgets(ctx: Any, decision: Any) -> str | None:
    """``quota_hold.budgets`` of a grant: its part in each event-read budget it counts against
    (None: none; a ``from_counters`` budget counts the hold's units and cost already)."""
    if not decision.budget_parts:
        return None
    read = {b.id for b in ctx.budgets if not from_counters(b)}
    parts = {str(bid): f"{part:f}" for bid, part in decision.budget_parts if bid in read}
    return orjson.dumps(parts).decode() if parts else None
