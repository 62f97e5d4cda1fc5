"""When a close may rate a period from the running usage counters instead of the events.

A counter ``(customer, meter, period start)`` holds what ingestion made of every stored
event under the subscriptions as they are now (``ledger.recount`` keeps it so when a
subscription starts or ends in the past). It equals the SQL aggregation of the events
(``store.aggregate_sql``) for a subscription period when:

- the window is the whole period (no partial first or last period);
- no other subscription of the customer counts into the same key: none overlaps the
  period, and none that starts later has a period starting where this one does;
- the subscriptions read with the snapshot are the ones the close rates;
- the meter is a plain ``count``, ``sum`` or ``max`` (no multipliers, no disputes, no
  per-transaction percentage price, no dimension price: its totals per value): unique
  counts, value aggregations and disputes need the events;
- no value of the period had more than 6 decimals (the ``*`` row's ``units_micro``);
- a ``max`` counter is not 0, or saw no event, or meters a quantity (never negative): an
  event without the property counts 0 in the counter and nothing in SQL, which differs
  only when every value is negative;
- the counters are not flagged stale (a database with events from before revision 0003).

Otherwise the close aggregates the events in SQL. ``late_detectable`` is the weaker test
for noticing late events: the ``*`` row counts every event of the period, so an unchanged
count means no event arrived for it (plans with disputes also look past the period; plans
with a time-weighted sum also before it: a late level carries into later periods).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from billing.catalog import Plan
from billing.catalog.schema import PercentagePrice
from billing.events import is_quantity_key
from billing.ledger.counters import ALL_EVENTS
from billing.store.types import to_us
from billing.rating.charges.percentage import needs_transactions
from billing.rating.periods import BillingCycle, Period
from billing.rating.types import MeterTotals

MICRO = Decimal(1_000_000)
PICO = Decimal(10) ** 12
ZERO = Decimal(0)

# (period_end, units_micro, events, cost_pico) by meter key
CounterRows = Mapping[str, tuple[int, int, int, int]]


@dataclass(frozen=True)
class SubscriptionRow:
    """A subscription as invoicing reads it (a plain row, cheap to load by the thousand;
    compared between the snapshot and the close)."""

    id: int
    customer_id: str
    plan_id: str
    plan_version: int
    started_at: datetime
    anchor_at: datetime
    ended_at: datetime | None
    trial_end: datetime | None


@dataclass(frozen=True)
class CounterUsage:
    usage: dict[str, MeterTotals]
    provider_cost: Decimal
    events: int


def plan_is_countable(plan: Plan) -> bool:
    """Every meter of the plan is a plain count / sum / max, and none is priced by value."""
    per_transaction = {c.meter for c in plan.charges
                       if isinstance(c.price, PercentagePrice) and needs_transactions(c.price)}
    return all(m.aggregation in ("count", "sum", "max") and m.multipliers is None and m.disputes is None
               and m.key not in per_transaction and m.key not in plan.compiled.group_meters for m in plan.meters)


def alone_in_period(sub: SubscriptionRow, period: Period, others: Sequence[SubscriptionRow],
                    cycle_of: Callable[[SubscriptionRow], BillingCycle]) -> bool:
    """No other subscription of the customer counts into ``(customer, *, period.start)``."""
    for other in others:
        if other.id == sub.id:
            continue
        if other.ended_at is not None and other.ended_at <= period.start:
            continue  # everything it covers lies in periods that start earlier
        if other.started_at >= period.end:
            first = cycle_of(other).period_containing(other.started_at)
            if first.start != period.start:
                continue  # its periods start elsewhere
        return False
    return True


def late_detectable(plan: Plan, window: tuple[datetime, datetime], period: Period, alone: bool,
                    same_subs: bool, stale: bool) -> bool:
    return (not stale and same_subs and alone and window == (period.start, period.end)
            and all(m.disputes is None and m.aggregation != "time_weighted_sum" for m in plan.meters))


def period_events(rows: CounterRows | None) -> int:
    """Every event of the period (the ``*`` row; 0 when the period has no counters)."""
    if not rows:
        return 0
    total = rows.get(ALL_EVENTS)
    return total[2] if total else -1  # -1: counters without the `*` row (never equal to a count)


def counter_usage(plan: Plan, period: Period, rows: CounterRows | None) -> CounterUsage | None:
    """The period's usage from its counters, or None when they are not exact for it (call
    only when ``late_detectable`` holds and ``plan_is_countable``)."""
    rows = rows or {}
    total = rows.get(ALL_EVENTS)
    if rows and (total is None or total[0] != to_us(period.end) or total[1] != 0):
        return None
    usage: dict[str, MeterTotals] = {}
    for meter in plan.meters:
        row = rows.get(meter.key)
        if row is None:
            usage[meter.key] = MeterTotals()
            continue
        end, units, events, cost = row
        if end != to_us(period.end):
            return None
        if meter.aggregation == "max" and units == 0 and events and not is_quantity_key(meter.property or ""):
            return None  # an event without the value counts 0 here, nothing in SQL: a negative maximum?
        usage[meter.key] = MeterTotals(Decimal(units) / MICRO, events, Decimal(cost) / PICO)
    cost = Decimal(total[3]) / PICO if total else ZERO
    return CounterUsage(usage, cost, total[2] if total else 0)


def period_key(customer_id: str, period: Period) -> tuple[str, int]:
    return customer_id, to_us(period.start)
