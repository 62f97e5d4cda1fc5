"""Running usage counters: which (customer, meter, period) an accepted event increments.

Pure given the subscriptions and catalog: ``CounterPlanner`` maps an event to counter
deltas; the repository applies them with one atomic upsert per batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from itertools import compress, repeat
from dataclasses import dataclass
from operator import itemgetter
from decimal import ROUND_HALF_EVEN, Decimal

from billing.catalog import Catalog, Meter, Plan
from billing.events import tokens_of
from billing.store.types import from_us, to_us
from billing.money import to_decimal
from billing.rating.periods import BillingCycle

MICRO = Decimal(1_000_000)
# The row of every event of a customer's period, metered or not: ``events`` counts them,
# ``cost_pico`` is their provider cost, ``units_micro`` counts the meter values of the
# period that were rounded to the micro-unit (0: every counter of the period is exact).
# Not a valid meter key, so it never collides with one.
ALL_EVENTS = "*"
# the aggregations a running counter holds; unique counts and the value aggregations
# (latest, min, avg, time_weighted_sum) have none: the close and the quota read their events
COUNTED = frozenset(("count", "sum", "max"))


@dataclass(frozen=True)
class SubscriptionView:
    id: int
    customer_id: str
    plan: Plan
    timezone: str
    anchor_at_us: int
    start_us: int
    end_us: int | None  # None: open-ended

    def covers(self, ts: int) -> bool:
        return self.start_us <= ts and (self.end_us is None or ts < self.end_us)

    def cycle(self) -> BillingCycle:
        return BillingCycle(self.plan.billing.interval, self.plan.billing.anchor, self.timezone,
                            from_us(self.anchor_at_us) if self.plan.billing.anchor == "anniversary" else None)


def to_micro(value: Decimal) -> int:
    return int((value * MICRO).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


class CounterPlanner:
    """Accumulates counter deltas for a batch of accepted events (the ingestion hot path)."""

    def __init__(self, subscriptions: Iterable[SubscriptionView],
                 cycle_periods: dict[tuple, tuple[int, int]] | None = None):
        self._subs: dict[str, list[SubscriptionView]] = defaultdict(list)
        for sub in subscriptions:
            self._subs[sub.customer_id].append(sub)
        self._period_cache: dict[int, tuple[int, int]] = {}  # sub -> (start, end) of its last period
        # billing cycle -> the period last found in it (may be shared between batches:
        # thousands of customers on one calendar cycle in one timezone compute it once)
        self._cycle_periods = {} if cycle_periods is None else cycle_periods
        self._meters: dict[tuple[int, str], list[Meter]] = {}
        # (customer, meter, period_start) -> [period_end, units_micro, events, cost_pico, is_max]
        self.deltas: dict[tuple[str, str, int], list] = {}
        # (customer, task id) -> [steps, tokens, cost_pico] of agent task usage (``add_tasks``)
        self.tasks: dict[tuple[str, str], list[int]] = {}
        names = {DEFAULT_TASK_PROPERTY}
        for subs in self._subs.values():
            names.update(_task_property(s.plan) for s in subs)
        self._task_names = tuple(sorted(names))

    def period_bounds(self, sub: SubscriptionView, ts: int) -> tuple[int, int]:
        """[start, end) in microseconds of the subscription's billing period containing ``ts``."""
        bounds = self._period_cache.get(sub.id)
        return bounds if bounds is not None and bounds[0] <= ts < bounds[1] else self._period(sub, ts)

    def _period(self, sub: SubscriptionView, ts: int) -> tuple[int, int]:
        billing = sub.plan.billing
        ckey = (billing.interval, billing.anchor, sub.timezone,
                sub.anchor_at_us if billing.anchor == "anniversary" else None)
        bounds = self._cycle_periods.get(ckey)
        if bounds is None or not bounds[0] <= ts < bounds[1]:
            period = sub.cycle().period_containing(from_us(ts))
            bounds = (to_us(period.start), to_us(period.end))
            if len(self._cycle_periods) > 10_000:
                self._cycle_periods.clear()
            self._cycle_periods[ckey] = bounds
        self._period_cache[sub.id] = bounds
        return bounds

    def _total(self, customer: str, start: int, end: int) -> list:
        """The period's ``*`` delta (created empty). Looked up in ``deltas`` each time, so a
        caller may start a fresh ``deltas`` dict between events."""
        total = self.deltas.get((customer, ALL_EVENTS, start))
        if total is None:
            total = self.deltas[(customer, ALL_EVENTS, start)] = [end, 0, 0, 0, False]
        return total

    def _rules_for(self, sub: SubscriptionView, etype: str) -> list[tuple]:
        """Compiled (meter key, meter, simple count?, is max) for the sub's meters of ``etype``."""
        rules = [(m.key, m, bool(m.filter), m.aggregation == "count" and m.multipliers is None,
                  m.aggregation == "max")
                 for m in sub.plan.meters if m.event_type == etype and m.aggregation in COUNTED]
        self._meters[(sub.id, etype)] = rules
        return rules

    def add(self, customer: str, etype: str, ts: int, props: dict, cost_pico: int) -> None:
        """One accepted event: its contribution to every counter it increments."""
        for sub in self._subs.get(customer, ()):
            rules = self._meters.get((sub.id, etype))
            if rules is None:
                rules = self._rules_for(sub, etype)
            self._add_to(sub, rules, customer, etype, ts, props, cost_pico)

    def prime(self, sub_id: int, start: int, end: int) -> None:
        """Tell the planner the period [start, end) a subscription is in (a caller that knows
        it saves the computation)."""
        self._period_cache[sub_id] = (start, end)

    def add_many(self, rows) -> None:
        """``add`` for every row of a batch (rows shaped like ``Prepared``: customer, event
        id, type, ts, properties text, model, cost_pico, properties), group by group: the
        events of one customer and type that fall in one period of a subscription are
        filtered and summed together. The same deltas as ``add`` per row (a test holds it)."""
        subs_of = self._subs
        for customer, group, etype in _groups(rows):
            subs = subs_of.get(customer)
            if not subs:
                continue
            stamps = list(map(_TS, group))
            lo, hi = min(stamps), max(stamps)
            for sub in subs:
                if hi < sub.start_us or (sub.end_us is not None and lo >= sub.end_us):
                    continue  # no event of the group in this subscription
                rules = self._meters.get((sub.id, etype))
                if rules is None:
                    rules = self._rules_for(sub, etype)
                bounds = self._period_cache.get(sub.id)
                if bounds is None or not bounds[0] <= lo < bounds[1]:
                    bounds = self._period(sub, lo)
                if lo < sub.start_us or (sub.end_us is not None and hi >= sub.end_us) or hi >= bounds[1]:
                    for row in group:  # straddles a subscription or period edge: event by event
                        self._add_to(sub, rules, customer, etype, row[3], row[7], row[6])
                    continue
                start, end = bounds
                total = self._total(customer, start, end)
                total[2] += len(group)  # every event of the period, metered or not
                total[3] += sum(map(_COST, group))
                for key, meter, filtered, simple_count, is_max in rules:
                    picked = _matching(meter, etype, group) if filtered else group
                    if not picked:
                        continue
                    n = len(picked)
                    cost = sum(map(_COST, picked))
                    if simple_count:
                        units = n * 1_000_000
                    else:
                        units, rounded = _group_units(meter, picked, is_max)
                        total[1] += rounded
                    self._bump((customer, key, start), end, units, n, cost, is_max)

    # ------------------------------------------------------------ agent tasks
    def task_of(self, customer: str, ts: int, props: dict) -> str | None:
        """The agent task an event counts toward: the value of the task property of the plan
        whose subscription covers the event (``agent_limits.task_property``; ``task`` when the
        plan names none or no subscription covers it), as text; None when it has none."""
        name = DEFAULT_TASK_PROPERTY
        for sub in self._subs.get(customer, ()):
            if sub.covers(ts):
                name = _task_property(sub.plan)
                break
        value = props.get(name)
        return None if value is None else value if type(value) is str else str(value)

    @property
    def task_properties(self) -> tuple[str, ...]:
        """The properties that may name an event's agent task under these subscriptions."""
        return self._task_names

    def add_tasks(self, rows) -> None:
        """Agent task usage of accepted rows (shaped like ``Prepared``): ``add_task`` of each."""
        props = list(map(_PROPS, rows))
        named = [False] * len(rows)
        for name in self._task_names:  # which rows name a task, tested in C (most name none)
            named = list(map(bool.__or__, named, map(dict.__contains__, props, repeat(name))))
        for row in compress(rows, named):
            self.add_task(row[0], row[3], row[7], row[6])

    def add_task(self, customer: str, ts: int, props: dict, cost_pico: int) -> None:
        """An accepted event that names a task (``task_of``) is one step of it, with its tokens
        (``tokens_of``) and provider cost."""
        task = self.task_of(customer, ts, props)
        if task is None:
            return
        slot = self.tasks.get((customer, task))
        if slot is None:
            self.tasks[(customer, task)] = [1, tokens_of(props), cost_pico]
        else:
            slot[0] += 1
            slot[1] += tokens_of(props)
            slot[2] += cost_pico

    def _add_to(self, sub: SubscriptionView, rules: list[tuple], customer: str, etype: str, ts: int,
                props: dict, cost_pico: int) -> None:
        """``add`` of one event for one subscription."""
        if ts < sub.start_us or (sub.end_us is not None and ts >= sub.end_us):
            return
        bounds = self._period_cache.get(sub.id)
        if bounds is None or not bounds[0] <= ts < bounds[1]:
            bounds = self._period(sub, ts)
        total = self._total(customer, bounds[0], bounds[1])  # every event of the period, metered or not
        total[2] += 1
        total[3] += cost_pico
        for key, meter, filtered, simple_count, is_max in rules:
            if filtered and not meter.matches(etype, props):
                continue
            if simple_count:
                units = 1_000_000
            else:
                units = _units(meter, props)
                if units is None:  # no value: still one of the meter's events (and its cost),
                    units = 0  # as in the SQL and pure aggregations
                elif type(units) is not int:  # rounded to the micro-unit: the period's
                    units = int(units)  # counters are not exact
                    total[1] += 1
            self._bump((customer, key, bounds[0]), bounds[1], units, 1, cost_pico, is_max)

    def _bump(self, dkey: tuple[str, str, int], end: int, units: int, n: int, cost: int, is_max: bool) -> None:
        slot = self.deltas.get(dkey)
        if slot is None:
            self.deltas[dkey] = [end, units, n, cost, is_max]
            return
        if is_max:
            if units > slot[1]:
                slot[1] = units
        else:
            slot[1] += units
        slot[2] += n
        slot[3] += cost


DEFAULT_TASK_PROPERTY = "task"


def _task_property(plan: Plan) -> str:
    return plan.agent_limits.task_property if plan.agent_limits else DEFAULT_TASK_PROPERTY


_TYPE = itemgetter(2)
_TS = itemgetter(3)
_COST = itemgetter(6)
_PROPS = itemgetter(7)
_TEXT_OR_NONE = frozenset((str, type(None)))


def _groups(rows):
    """(customer, rows, event type) for each customer and event type among ``rows``."""
    by_customer: dict[str, list] = {}
    for row in rows:
        run = by_customer.get(row[0])
        if run is None:
            by_customer[row[0]] = [row]
        else:
            run.append(row)
    for customer, run in by_customer.items():
        types = set(map(_TYPE, run))
        if len(types) == 1:
            yield customer, run, types.pop()
            continue
        by_type: dict[str, list] = {}
        for row in run:
            by_type.setdefault(row[2], []).append(row)
        for etype, part in by_type.items():
            yield customer, part, etype


def _matching(meter: Meter, etype: str, group: list) -> list:
    """The rows of ``group`` (one event type) that pass the meter's filter."""
    if etype != meter.event_type:
        return []
    sets = meter._filter_sets  # None: some rule is not a plain list (not / exists)
    if sets is not None and len(sets) == 1:
        ((prop, options),) = sets
        values = list(map(dict.get, map(_PROPS, group), repeat(prop)))
        if _TEXT_OR_NONE.issuperset(map(type, values)):  # the common case, matched in C
            return list(compress(group, map(options.__contains__, values)))
        return [row for row, v in zip(group, values)
                if v is not None and (v if type(v) is str else str(v)) in options]
    return [row for row in group if meter.matches(etype, row[7])]


def _group_units(meter: Meter, rows: list, is_max: bool) -> tuple[int, int]:
    """The rows' combined contribution (sum, or max for a ``max`` meter) in micro-units,
    and how many of their values had to be rounded to the micro-unit."""
    if meter.multipliers is None and meter.aggregation != "count":
        prop = meter.property or ""
        values = [row[7].get(prop) for row in rows]
        if all(type(v) is int for v in values):
            return (max(values) if is_max else sum(values)) * 1_000_000, 0
    units = [_units(meter, row[7]) for row in rows]
    rounded = sum(1 for u in units if u is not None and type(u) is not int)
    units = [0 if u is None else int(u) for u in units]
    return (max(units) if is_max else sum(units)), rounded


def _units(meter: Meter, props: dict) -> int | None:
    """The event's contribution to a counter, in micro-units (None: no value to count);
    a ``_Rounded`` int when the value had to be rounded."""
    factor = meter.multipliers.factor(props) if meter.multipliers else None
    if meter.aggregation == "count":
        return 1_000_000 if factor is None else _micro(factor)
    raw = props.get(meter.property or "")
    if raw is None:
        return None
    if type(raw) is int and factor is None:
        return raw * 1_000_000
    value = to_decimal(raw) * (factor if factor is not None else 1)
    return _micro(value)


class _Rounded(int):
    """Micro-units of a value that had more than 6 decimals (rounded half-even)."""


def _micro(value: Decimal) -> int:
    micro = to_micro(value)
    return micro if micro == value * MICRO else _Rounded(micro)


def subscription_views(rows, customers: dict[str, str], catalog: Catalog) -> list[SubscriptionView]:
    """Build views from subscription rows (id, customer_id, plan_id, plan_version, anchor_at,
    started_at, ended_at); ``customers`` maps customer id -> timezone."""
    views = []
    for sid, customer_id, plan_id, version, anchor_at, started_at, ended_at in rows:
        plan = catalog.get(plan_id, version)
        views.append(SubscriptionView(sid, customer_id, plan, customers.get(customer_id, "UTC"),
                                      to_us(anchor_at), to_us(started_at), to_us(ended_at) if ended_at else None))
    return views
