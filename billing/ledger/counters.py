"""Running usage counters: which (customer, meter, period) an accepted event increments.

Pure given the subscriptions and catalog: ``CounterPlanner`` maps an event to counter
deltas; the repository applies them with one atomic upsert per batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from billing.catalog import Catalog, Meter, Plan
from billing.ledger.types import from_us, to_us
from billing.money import to_decimal
from billing.rating.periods import BillingCycle

MICRO = Decimal(1_000_000)
# The row of every event of a customer's period, metered or not: ``events`` counts them,
# ``cost_pico`` is their provider cost, ``units_micro`` counts the meter values of the
# period that were rounded to the micro-unit (0: every counter of the period is exact).
# Not a valid meter key, so it never collides with one.
ALL_EVENTS = "*"


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

    def __init__(self, subscriptions: Iterable[SubscriptionView]):
        self._subs: dict[str, list[SubscriptionView]] = defaultdict(list)
        for sub in subscriptions:
            self._subs[sub.customer_id].append(sub)
        self._period_cache: dict[int, tuple[int, int, list]] = {}  # sub -> (start, end, its `*` delta)
        self._meters: dict[tuple[int, str], list[Meter]] = {}
        # (customer, meter, period_start) -> [period_end, units_micro, events, cost_pico, is_max]
        self.deltas: dict[tuple[str, str, int], list] = {}

    def _period(self, sub: SubscriptionView, ts: int) -> tuple[int, int, list]:
        period = sub.cycle().period_containing(from_us(ts))
        start, end = to_us(period.start), to_us(period.end)
        total = self.deltas.get((sub.customer_id, ALL_EVENTS, start))
        if total is None:
            total = self.deltas[(sub.customer_id, ALL_EVENTS, start)] = [end, 0, 0, 0, False]
        bounds = self._period_cache[sub.id] = (start, end, total)
        return bounds

    def _rules_for(self, sub: SubscriptionView, etype: str) -> list[tuple]:
        """Compiled (meter key, meter, simple count?, is max) for the sub's meters of ``etype``."""
        rules = [(m.key, m, bool(m.filter), m.aggregation == "count" and m.multipliers is None,
                  m.aggregation == "max")
                 for m in sub.plan.meters if m.event_type == etype and m.aggregation != "unique_count"]
        self._meters[(sub.id, etype)] = rules
        return rules

    def add(self, customer: str, etype: str, ts: int, props: dict, cost_pico: int) -> None:
        subs = self._subs.get(customer)
        if not subs:
            return
        deltas = self.deltas
        for sub in subs:
            if ts < sub.start_us or (sub.end_us is not None and ts >= sub.end_us):
                continue
            bounds = self._period_cache.get(sub.id)
            if bounds is None or not bounds[0] <= ts < bounds[1]:
                bounds = self._period(sub, ts)
            total = bounds[2]  # every event of the period, metered or not
            total[2] += 1
            total[3] += cost_pico
            rules = self._meters.get((sub.id, etype))
            if rules is None:
                rules = self._rules_for(sub, etype)
            if not rules:
                continue
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
                dkey = (customer, key, bounds[0])
                slot = deltas.get(dkey)
                if slot is None:
                    deltas[dkey] = [bounds[1], units, 1, cost_pico, is_max]
                elif is_max:
                    if units > slot[1]:
                        slot[1] = units
                    slot[2] += 1
                    slot[3] += cost_pico
                else:
                    slot[1] += units
                    slot[2] += 1
                    slot[3] += cost_pico


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
