"""Meter aggregation in Python, for previews and simulations (the ledger does the same
aggregation in SQL; a test holds both to the same answers).

Rules: an event counts in the period that contains its timestamp (half-open
[start, end)); duplicate ids count once (same id with different content is a conflict);
``count`` sums the per-event multiplier (1 by default), ``sum`` sums property x
multiplier, ``max`` takes the largest property x multiplier, ``unique_count`` counts
distinct property values. Outcomes disputed inside their window are left out. The value
aggregations (``latest``, ``min``, ``avg``, ``time_weighted_sum``) are defined in
``billing.rating.levels``; a time-weighted sum also reads the last valued event before the
period (the level carried into it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from billing.catalog.schema import Meter, Plan
from billing.errors import BillingError, ErrorCode
from billing.events import EventError, UsageEvent
from billing.money import to_decimal
from billing.rating import levels
from billing.rating.types import MeterTotals

ZERO = Decimal(0)
# aggregations that read a number from the event's property (a value that is not a
# non-negative number is refused at ingestion)
MEASURED = ("sum", "max", "latest", "min", "avg", "time_weighted_sum")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EventConflict(BillingError):
    code = ErrorCode.EVENT_CONFLICT


def dedupe(events: Iterable[UsageEvent]) -> list[UsageEvent]:
    """Drop exact replays; raise EventConflict when an id is reused with other content."""
    seen: dict[tuple[str, str], UsageEvent] = {}
    for event in events:
        key = (event.customer, event.id)
        previous = seen.get(key)
        if previous is None:
            seen[key] = event
        elif previous.canonical() != event.canonical():
            raise EventConflict(f"event {event.id!r} of customer {event.customer!r} was sent twice with different content")
    return list(seen.values())


def disputed_outcomes(meter: Meter, events: Iterable[UsageEvent], as_of: datetime | None = None) -> dict[str, list[datetime]]:
    """outcome id -> timestamps of its disputes/reopenings (known by ``as_of``)."""
    assert meter.disputes is not None
    out: dict[str, list[datetime]] = {}
    for e in events:
        if e.type in meter.disputes.dispute_types and (as_of is None or e.timestamp <= as_of):
            oid = e.properties.get(meter.disputes.id_property)
            if oid is not None:
                out.setdefault(str(oid), []).append(e.timestamp)
    return out


def is_disputed(meter: Meter, event: UsageEvent, disputes: dict[str, list[datetime]]) -> bool:
    assert meter.disputes is not None
    oid = event.properties.get(meter.disputes.id_property)
    if oid is None:
        return False
    window = timedelta(days=meter.disputes.window_days)
    return any(event.timestamp <= t <= event.timestamp + window for t in disputes.get(str(oid), ()))


def measured(meter: Meter, event: UsageEvent) -> Decimal | None:
    """The numeric property a sum/max meter measures on ``event`` (None when absent).

    Raises EventError (``non_numeric_quantity`` / ``negative_quantity``) naming the event
    and property when the value is not a non-negative number."""
    raw = event.properties.get(meter.property or "")
    if raw is None:
        return None
    try:
        value = to_decimal(raw)
    except (ArithmeticError, ValueError, TypeError):
        raise EventError(f"event {event.id!r}: property {meter.property!r} (measured by meter {meter.key!r}) "
                         f"must be a number, got {raw!r}", code=ErrorCode.NON_NUMERIC_QUANTITY) from None
    if value < 0:
        raise EventError(f"event {event.id!r}: property {meter.property!r} (measured by meter {meter.key!r}) "
                         f"must not be negative, got {raw}", code=ErrorCode.NEGATIVE_QUANTITY)
    return value


def check_metered_values(plan: Plan, event: UsageEvent) -> None:
    """Raise EventError if a sum/max meter of ``plan`` that sees ``event`` cannot read its value."""
    for meter in plan.meters:
        if meter.aggregation in MEASURED and meter.matches(event.type, event.properties):
            measured(meter, event)


def meter_value(meter: Meter, event: UsageEvent) -> Decimal | None:
    """The event's contribution before aggregation (None: the event carries no value)."""
    factor = meter.multipliers.factor(event.properties) if meter.multipliers else Decimal(1)
    if meter.aggregation == "count":
        return factor
    if meter.aggregation == "unique_count":
        # distinct values are counted as text ("u_42"): never parsed as a number
        return None if event.properties.get(meter.property or "") is None else Decimal(1)
    value = measured(meter, event)
    return None if value is None else value * factor


def aggregate(
    plan: Plan,
    events: Iterable[UsageEvent],
    start: datetime,
    end: datetime,
    cost_of: Callable[[UsageEvent], Decimal] = lambda e: ZERO,
    *,
    as_of: datetime | None = None,
    customer: str | None = None,
) -> dict[str, MeterTotals]:
    """Every meter of ``plan`` over the events with start <= timestamp < end."""
    unique = dedupe(events)
    if customer is not None:
        unique = [e for e in unique if e.customer == customer]
    unique.sort(key=lambda e: (e.timestamp, e.id))
    in_period = [e for e in unique if start <= e.timestamp < end]
    totals: dict[str, MeterTotals] = {}
    for meter in plan.meters:
        disputes = disputed_outcomes(meter, unique, as_of) if meter.disputes else {}
        units, count, cost = ZERO, 0, ZERO
        values: list[Decimal] = []
        distinct: set[str] = set()
        by_value = plan.compiled.group_meters.get(meter.key)  # a dimension price splits it
        groups: dict[str | None, list] = {}
        for event in in_period:
            if not meter.matches(event.type, event.properties):
                continue
            if meter.disputes and is_disputed(meter, event, disputes):
                continue
            value = meter_value(meter, event)
            count += 1
            event_cost = cost_of(event)
            cost += event_cost
            if by_value is not None:  # count / sum: the value's units, cost and events
                raw = event.properties.get(by_value)
                slot = groups.setdefault(None if raw is None else raw if type(raw) is str else str(raw),
                                         [ZERO, ZERO, 0])
                slot[0] += value or ZERO
                slot[1] += event_cost
                slot[2] += 1
            if value is None:
                continue
            values.append(value)
            if meter.aggregation == "unique_count":
                distinct.add(str(event.properties.get(meter.property or "")))
        if meter.aggregation in levels.AGGREGATIONS:
            units = _level_units(meter, unique, in_period, disputes, start, end)
        elif meter.aggregation == "max":
            units = max(values, default=ZERO)
        elif meter.aggregation == "unique_count":
            units = Decimal(len(distinct))
        else:
            units = sum(values, ZERO)
        totals[meter.key] = MeterTotals(units, count, cost, tuple(values),
                                        tuple((v, u, c, n) for v, (u, c, n) in sorted(
                                            groups.items(), key=lambda g: (g[0] is None, g[0] or ""))))
    return totals


def micros(t: datetime) -> int:
    """An aware instant as integer microseconds since the epoch (how the ledger stores it)."""
    delta = t - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _level_units(meter: Meter, every: list[UsageEvent], in_period: list[UsageEvent], disputes: dict,
                 start: datetime, end: datetime) -> Decimal:
    """A value aggregation's units (``billing.rating.levels``) over the period's events, or
    -- time-weighted -- over every event of each customer before ``end``."""
    def valued(events: list[UsageEvent]) -> list[tuple[str, int, str, Decimal]]:
        out = []
        for e in events:
            if meter.matches(e.type, e.properties) and not (meter.disputes and is_disputed(meter, e, disputes)):
                value = measured(meter, e)
                if value is not None:
                    out.append((e.customer, micros(e.timestamp), e.id, value))
        return out

    if meter.aggregation == "time_weighted_sum":
        by_customer: dict[str, list] = {}
        for customer, ts, eid, value in valued([e for e in every if e.timestamp < end]):
            by_customer.setdefault(customer, []).append((ts, eid, value))
        return sum((levels.time_weighted(levels.held_by_level(found, micros(start), micros(end)),
                                         meter.time_unit) for found in by_customer.values()), ZERO)
    found = valued(in_period)
    if meter.aggregation == "latest":
        return levels.latest((ts, eid, value) for _, ts, eid, value in found)
    if meter.aggregation == "min":
        return min((value for *_, value in found), default=ZERO)
    return levels.average(sum((value for *_, value in found), ZERO), len(found))
