"""A customer's budgets in the quota's reads (``billing.quota.budgets`` is the rule).

* The budgets come with the customer's context (``reservations.context_sql`` reads them
  in the customer's row): a customer without budgets costs no query, and the context
  cache (``Quota.context_ttl``) keeps them.
* A customer-wide budget over the billing period reads nothing more: its measure is the
  period's counters, read for the decision anyway (``budgets.from_counters``).
* Every other budget reads its scope's events in its window in ONE extra statement per
  customer (``budget_query``, pipelined with the state statement on PostgreSQL): per budget
  the provider cost (``cost``), the meter's units (``units``), or every charged meter's
  units over the window within the period (``billed``: the period's spend with them less
  the spend without them, ``budget_usage``); and the live holds' parts in each budget
  (``quota_hold.budgets``), so concurrent reservations see each other.
* ``BudgetReader`` keeps what it read per customer and then reads only the events stored
  since; the events this process commits itself (``BudgetReader.committed``) are added
  after their COMMIT, so while nothing else writes the customer's events a decision reads
  no event at all: the period's all-events counter matching what the entry counted says
  so (``fast``), when every window lies within the period.

The events are found by the customer's own rows (``ts + 0``: not the all-customers time
index); hourly rollups may replace the read of the events later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from threading import Lock
from typing import Any, NamedTuple

import orjson

from billing.quota.budgets import LIST_PROPERTIES, Budget, BudgetUse, from_counters, in_scope, window
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

    __slots__ = ("ctx", "lo", "hi", "bounds", "events", "key", "sql", "additive", "inside")

    def __init__(self, ctx: Any, now: datetime) -> None:
        self.ctx = ctx
        self.bounds = {b.id: window(b, now, ctx.timezone, ctx.period.start, ctx.period.end) for b in ctx.budgets}
        self.lo = max(start for start, _ in self.bounds.values())
        self.hi = min(end for _, end in self.bounds.values())
        self.events = event_budgets(ctx)
        self.key = (id(ctx.plan), to_us(ctx.period.start), tuple((b.id, to_us(self.bounds[b.id][0]))
                                                                   for b in self.events))
        self.sql: dict[tuple[bool, Any], tuple[str, list, int]] = {}
        self.additive = _additive(ctx)
        # every event-read window within the period and the subscription: an event that counts
        # in one moves the period's all-events counter (the ``fast`` statement's test)
        covers = getattr(ctx, "covers", None)
        self.inside = False
        if covers is not None:
            p0 = to_us(max(ctx.period.start, covers[0]))
            p1 = to_us(ctx.period.end if covers[1] is None else min(ctx.period.end, covers[1]))
            self.inside = all(p0 <= lo and hi <= p1 for lo, hi in (_bounds_us(self, ctx, b) for b in self.events))


_WINDOWS: dict[int, _Windows] = {}


def windows_of(ctx: Any, now: datetime) -> _Windows:
    """The context's budget windows at ``now`` (computed once per context and window)."""
    hit = _WINDOWS.get(id(ctx))
    if hit is None or hit.ctx is not ctx or not hit.lo <= now < hit.hi:
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


def _meters_of(ctx: Any, b: Budget) -> list[Any]:
    """The meters a units or billed budget counts (those the plan still has)."""
    by_key = ctx.plan.compiled.meter_by_key
    keys = [b.meter] if b.measure == "units" else list(ctx.plan.compiled.charged_meters)
    return [by_key[k] for k in keys if k in by_key]


def _bounds_us(w: "_Windows", ctx: Any, b: Budget) -> tuple[int, int]:
    start, end = w.bounds[b.id]
    if b.measure == "billed":  # the window's usage within the current period
        start, end = max(start, ctx.period.start), min(end, ctx.period.end)
    return to_us(start), to_us(end)


def budget_query(pg: bool, ctx: Any, now: datetime, after_id: int | None = None) -> tuple[str, list[Any]] | None:
    """One statement reading the customer's event-read budgets (None: it has none).

    ``after_id`` None (a full read), rows: ``('e', '<budget id><SEP><meter>[<SEP><group>]',
    NULL, value, cost_pico, events)`` per budget and meter (``cost``: meter ``*``). Else (what ``BudgetReader`` read before, then the events
    past ``after_id``): ``('r', type, properties, ts, cost_pico, id)`` of each of them.
    Always ``('m', '', NULL, the last event id stored, 0, 0)``,
    ``('h', quota_hold.budgets, NULL, created_at, 0, 0)`` per live hold counting
    against any budget and, in the same snapshot, ``('n', '', NULL, events, cost_pico,
    cost_carry)`` of the period's all-events counter."""
    return _query(pg, ctx, windows_of(ctx, now), now, after_id)


def _query(pg: bool, ctx: Any, w: "_Windows", now: datetime, after_id: int | None, fast: bool = False
           ) -> tuple[str, list[Any]] | None:
    if not w.events:
        return None
    delta = FAST if fast else after_id is not None
    built = w.sql.get((pg, delta))
    if built is None:
        built = w.sql[(pg, delta)] = _statement(pg, ctx, w, delta)
    if delta is FAST:
        params = built[1].copy()
        params[built[2]] = to_us(now)
        return built[0], params
    sql, template, now_slot = built
    params = template.copy()
    params[now_slot] = to_us(now)
    if delta:
        if pg:  # a literal: PostgreSQL plans the range of ids it is (the few newest rows), not any range
            return sql.replace("#AFTER#", str(int(after_id))), params
        params[1] = after_id  # SQLite: a parameter (one prepared statement); the rowid range either way
    return sql, params


_NOW = object()  # the parameter a statement gets on each run
FAST = "fast"  # the statement of the live holds and the all-events counter only (``BudgetReader``)


def _statement(pg: bool, ctx: Any, w: "_Windows", delta: Any) -> tuple[str, list, int]:
    sql = _Sql("postgresql" if pg else "sqlite")
    ph = sql.ph
    parts: list[str] = []
    params: list[Any] = []
    null = "CAST(NULL AS TEXT)"
    if delta is FAST:  # the same text for every customer: prepared once
        pass
    elif delta:  # the customer's newest rows by id (SQLite: by rowid, not its customer index)
        props = "e.properties::text" if pg else "e.properties"
        who = "e.customer_id" if pg else "+e.customer_id"
        parts.append(f"SELECT 'r', e.type, {props}, e.ts, e.cost_pico, e.id FROM usage_event e "
                     f"WHERE {who} = {ph} AND e.id > {'#AFTER#' if pg else ph}")
        params += [ctx.customer] if pg else [ctx.customer, 0]
    else:
        where = f"e.customer_id = {ph} AND e.ts + 0 >= {ph} AND e.ts + 0 < {ph}"
        for b in w.events:
            start, end = _bounds_us(w, ctx, b)
            if b.measure == "cost":
                p = [ctx.customer, start, end]
                scope = _scope(sql, b, p)
                parts.append(f"SELECT 'e', '{b.id}{SEP}*', {null}, COUNT(*), COALESCE(SUM(e.cost_pico), 0), "
                             f"COUNT(*) FROM usage_event e WHERE {where} AND {scope}")
                params += p
                continue
            for meter in _meters_of(ctx, b):
                p = [ctx.customer, start, end]
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
                key = f"{b.id}{SEP}{meter.key}"
                label = f"'{key}'" if group is None else \
                    f"(CASE WHEN {group} IS NULL THEN '{key}' ELSE '{key}{SEP}' || {group} END)"
                grouping = f" GROUP BY {group}" if group is not None else ""
                parts.append(f"SELECT 'e', {label}, {null}, {value}, COALESCE(SUM(e.cost_pico), 0), COUNT(*) "
                             f"FROM usage_event e WHERE {where} AND {scope} AND {cond}{grouping}")
                params += p
    if delta is not FAST:  # the last id stored (every customer's: one step down the primary key), where the next read starts
        parts.append(f"SELECT 'm', '', {null}, COALESCE(MAX(id), 0), 0, 0 FROM usage_event")
    parts.append(f"SELECT 'h', budgets, {null}, created_at, 0, 0 FROM quota_hold WHERE customer_id = {ph} "
                 f"AND status = 'held' AND expires_at > {ph} AND budgets IS NOT NULL")
    parts.append(f"SELECT 'n', '', {null}, events, cost_pico, cost_carry FROM usage_counter "
                 f"WHERE customer_id = {ph} AND meter = '*' AND period_start = {ph}")
    params += [ctx.customer, _NOW, ctx.customer, to_us(ctx.period.start)]
    return " UNION ALL ".join(parts), params, params.index(_NOW)


class _Entry(NamedTuple):
    """What ``BudgetReader`` knows of one customer's event-read budgets."""

    key: tuple  # ``_Windows.key`` of the windows it counts
    last: int  # the last event id a read saw stored (the next delta read starts after it)
    events: int  # the period's all-events counter it matches: events
    cost: int  # and cost (picodollars)
    per_label: dict  # {'<budget id><SEP><meter>': [units, cost, events]}
    out: list  # its rows (``budget_usage``'s ``'e'`` rows)
    own: frozenset = frozenset()  # ids above ``last`` added by ``committed`` (a delta read skips them)
    fast: bool = True  # whether the next read may be the ``fast`` one (False: the counter moved otherwise)


class BudgetReader:
    """The committed part of a customer's event-read budgets, read once and then only the
    events stored since (``id`` above the last one read), per process.

    An entry (``_Entry``) holds, from one statement's snapshot, each budget's units, cost and
    events per meter, the last event id read and the period's all-events counter (events,
    cost). A later statement reads the events past that id with the counter again: they are
    added with the counters' own rules (``Meter.matches``, ``ledger.counters`` units,
    ``budgets.in_scope``) when the counter moved by exactly what they add in the period -- no
    event below the id arrived since (a transaction that committed late) and none was
    re-costed. Otherwise, and for a new window, period or plan, everything is read again.

    The events this process committed (``committed``, after their COMMIT) are added to the
    entry the same way, their ids kept so a delta read does not add them twice. While the
    entry's windows lie within the period, the next statement is the ``fast`` one: the
    counter alone, with the live holds; when it equals the entry's (events only grow, and
    any event in the windows is in the period's counter) no event is read; else the next
    statement is a delta read. Live holds: read every time.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._lock = Lock()  # ``committed`` replaces an entry only if it is still the one it added to
        self._recent: dict[str, tuple] = {}  # customer -> (ctx, read at, rows): for checks within a ttl

    def recent(self, ctx: Any, now: datetime, ttl: float) -> list[tuple] | None:
        """The rows read for ``ctx`` less than ``ttl`` seconds before ``now`` (None: none).
        Checks take them (they are read-only, as the context they come with); reservations
        always read under the customer's lock."""
        hit = self._recent.get(ctx.customer)
        if hit is not None and hit[0] is ctx and 0 <= (now - hit[1]).total_seconds() < ttl:
            return hit[2]
        return None

    def remember(self, ctx: Any, now: datetime, rows: list[tuple]) -> None:
        if len(self._recent) > 100_000:
            self._recent.clear()
        self._recent[ctx.customer] = (ctx, now, rows)

    def statement(self, pg: bool, ctx: Any, now: datetime) -> tuple[tuple[str, list[Any]] | None, Any]:
        """The statement to run now and the token ``rows`` takes back with its rows (the
        entry as it is now: what ``committed`` adds later is not in it)."""
        w = windows_of(ctx, now)
        entry = self._entries.get(ctx.customer)
        if entry is not None and (entry.key != w.key or not w.additive):
            entry = None
        fast = entry is not None and entry.fast and w.inside
        return _query(pg, ctx, w, now, entry.last if entry is not None else None, fast), (w, entry, fast)

    def rows(self, ctx: Any, token: Any, found: Sequence[Sequence[Any]]) -> list[tuple] | None:
        """``budget_usage``'s rows (``('e', '<budget id><SEP><meter>', units, cost_pico,
        events)`` and the holds'); None when the entry cannot be trusted (run ``statement``
        again: it reads the events then)."""
        w, entry, fast = token
        holds, total, last, fresh = [], (0, 0), 0, []
        if entry is not None and all(row[0] in ("h", "n", "m") for row in found):  # nothing new: the entry
            for row in found:
                if row[0] == "h":
                    holds.append(("h", row[1], row[3], 0, 0))
                elif row[0] == "n":
                    total = (int(row[3]), join(row[5], row[4]))
                else:
                    last = int(row[3])
            if (entry.events, entry.cost) == total:
                if last > entry.last:  # others' events since: start the next read after them
                    self._replace(ctx.customer, entry, entry._replace(last=last, own=frozenset()))
                return entry.out + holds
            if fast:  # the counter moved by more than this process added: read the events past the id
                self._replace(ctx.customer, entry, entry._replace(fast=False))
            else:
                self._entries.pop(ctx.customer, None)
            return None
        per_label: dict[str, list] = {} if entry is None else {k: list(v) for k, v in entry.per_label.items()}
        for row in found:
            kind = row[0]
            if kind == "e":
                _add(per_label, *_normalized(ctx, row))
            elif kind == "r":
                if entry is None or int(row[5]) not in entry.own:
                    fresh.append(row)
            elif kind == "h":
                holds.append(("h", row[1], row[3], 0, 0))
            elif kind == "n":
                total = (int(row[3]), join(row[5], row[4]))
            elif kind == "m":
                last = int(row[3])
        if entry is not None:
            newest, counted = _add_fresh(ctx, w, per_label, fresh, entry.last)
            last = max(last, newest)
            if (entry.events + counted[0], entry.cost + counted[1]) != total:
                self._entries.pop(ctx.customer, None)
                return None
        if len(self._entries) > 100_000:
            self._entries.clear()
        out = [("e", k, u, c, n) for k, (u, c, n) in per_label.items()]
        self._entries[ctx.customer] = _Entry(w.key, last, total[0], total[1], per_label, out)
        return out + holds

    def committed(self, ctx: Any, now: datetime, events: Sequence[tuple[Any, int]]) -> None:
        """Add ``events`` (prepared events of ``ctx``'s customer this process inserted, with
        their ids), after their transaction committed, to the customer's entry (if any),
        as a delta read would. A statement sent after this call sees them (their COMMIT
        returned before), so its counter counts them."""
        customer = ctx.customer
        entry = self._entries.get(customer)
        if entry is None:
            return
        w = windows_of(ctx, now)
        if entry.key != w.key or not w.additive:
            return
        fresh = [("r", p.type, p.properties_json, p.ts, p.cost_pico, eid) for p, eid in events
                 if eid > entry.last and eid not in entry.own]
        if not fresh:
            return
        per_label = {k: list(v) for k, v in entry.per_label.items()}
        _, counted = _add_fresh(ctx, w, per_label, fresh, entry.last)
        out = [("e", k, u, c, n) for k, (u, c, n) in per_label.items()]
        self._replace(customer, entry, entry._replace(
            events=entry.events + counted[0], cost=entry.cost + counted[1], per_label=per_label, out=out,
            own=entry.own | {int(r[5]) for r in fresh}))

    def _replace(self, customer: str, old: _Entry, new: _Entry) -> None:
        """``customer``'s entry becomes ``new`` if it is still ``old`` (another thread may
        have stored a newer one)."""
        with self._lock:
            if self._entries.get(customer) is old:
                self._entries[customer] = new

    def forget(self, customer: str | None = None) -> None:
        if customer is None:
            self._entries.clear()
            self._recent.clear()
        else:
            self._entries.pop(customer, None)
            self._recent.pop(customer, None)


def _add(events: dict[str, list], label: str, units: Decimal, cost: int, n: int) -> None:
    slot = events.get(label)
    if slot is None:
        events[label] = [units, cost, n]
    else:
        slot[0] += units
        slot[1] += cost
        slot[2] += n


def _normalized(ctx: Any, row: Sequence[Any]) -> tuple[str, Decimal, int, int]:
    """An ``'e'`` row as (budget id<SEP>meter, units with the multiplier's factor, cost, events)."""
    _, label, _, value, cost, n = row
    bid, _, rest = label.partition(SEP)
    meter_key, sep, group = rest.partition(SEP)
    if meter_key == "*":
        return f"{bid}{SEP}*", ZERO, int(cost or 0), int(n or 0)
    meter = ctx.plan.compiled.meter_by_key[meter_key]
    if meter.aggregation == "sum":  # SQLite sums micro-units, PostgreSQL numeric (aggregate_sql._Sql.number)
        units = Decimal(value) / MICRO if isinstance(value, int) else Decimal(value or 0)
    else:
        units = Decimal(value or 0)
    mult = meter.multipliers
    if mult is not None and meter.aggregation != "unique_count":
        units *= mult.values.get(group, mult.default) if sep else mult.default
    return f"{bid}{SEP}{meter_key}", units, int(cost or 0), int(n or 0)


def _add_fresh(ctx: Any, w: "_Windows", events: dict[str, list], fresh: Sequence[Sequence[Any]], after: int
               ) -> tuple[int, tuple[int, int]]:
    """Add the events stored since the entry (``'r'`` rows) to its budgets, as the counters
    count them; returns the last id and (events, cost) of those in the current period."""
    from billing.ledger.counters import _units

    p0, p1 = to_us(ctx.period.start), to_us(ctx.period.end)
    last, n, cost = after, 0, 0
    for _, etype, text, ts, cost_pico, eid in fresh:
        ts, cost_pico, eid = int(ts), int(cost_pico or 0), int(eid)
        last = max(last, eid)
        if p0 <= ts < p1:
            n += 1
            cost += cost_pico
        props = None
        for b in w.events:
            start, end = _bounds_us(w, ctx, b)
            if not start <= ts < end:
                continue
            if props is None:
                props = orjson.loads(text) if isinstance(text, (str, bytes)) else dict(text)
            if not in_scope(b.scope_property, b.scope_value, props):
                continue
            if b.measure == "cost":
                _add(events, f"{b.id}{SEP}*", ZERO, cost_pico, 1)
                continue
            for meter in _meters_of(ctx, b):
                if meter.matches(etype, props):
                    micro = _units(meter, props)
                    _add(events, f"{b.id}{SEP}{meter.key}", Decimal(int(micro or 0)) / MICRO, cost_pico, 1)
    return last, (n, cost)


def _additive(ctx: Any) -> bool:
    """Whether the budgets' events can be added one by one as the counters add them (count
    and sum meters without disputes; not a unique count or a value aggregation)."""
    return not any(m.aggregation not in ("count", "sum") or m.disputes
                   for b in event_budgets(ctx) if b.measure != "cost" for m in _meters_of(ctx, b))


def budget_usage(ctx: Any, now: datetime, usage: Mapping[str, MeterUsage], rows: Sequence[Sequence[Any]] | None
                 ) -> tuple[BudgetUse, ...]:
    """The customer's budgets with their windows and usage: committed events (``rows`` of
    ``BudgetReader.rows``) plus live holds' parts; ``from_counters`` budgets with ``used``
    None (the decision reads the counters). ``rows`` None: only those."""
    from billing.quota.usage import charge_spends

    plan = ctx.plan
    w = windows_of(ctx, now)
    if rows is not None:  # the same rows and usage as a moment ago: the same answer
        memo = (w.key, tuple(rows), _usage_key(plan, usage) if any(b.measure == "billed" for b in w.events) else ())
        hit = _USES.get(id(ctx))
        if hit is not None and hit[0] is ctx and hit[1] == memo:
            return hit[2]
    per_meter: dict[int, dict[str, tuple]] = {}
    cost: dict[int, int] = {}
    held: dict[int, list[tuple[int, Decimal]]] = {}
    for kind, label, units, cost_pico, n in rows or ():
        if kind == "h":
            for bid, part in orjson.loads(label).items():
                held.setdefault(int(bid), []).append((int(units), Decimal(part)))
            continue
        bid_text, _, meter_key = label.partition(SEP)
        if meter_key == "*":
            cost[int(bid_text)] = int(cost_pico)
        else:
            per_meter.setdefault(int(bid_text), {})[meter_key] = (units, int(cost_pico), int(n))
    out = []
    for b in ctx.budgets:
        start, end = w.bounds[b.id]
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
            used += meters.get(b.meter, (ZERO,))[0]
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
