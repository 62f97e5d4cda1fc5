"""The usage counters a list of stored events must produce (per customer, meter and
calendar month from the subscription's start), computed in Python from the events."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN

from billing.events import parse_event
from billing.ledger.counters import ALL_EVENTS
from billing.store.types import to_us
from billing.rating.meters import meter_value
from billing.rating.periods import BillingCycle

SUB_START = datetime(2026, 10, 1, tzinfo=UTC)  # events before it (from Sep 25) count in no counter
CYCLE = BillingCycle("month", "calendar", "UTC")


def expected_counters(plan, customer: str, rows) -> dict[tuple[str, str, int], tuple[int, int, int, int]]:
    """(customer, meter, period start) -> (period end, units micro, events, cost pico), from events."""
    out: dict[tuple[str, str, int], list] = {}
    for _, event_id, etype, ts, props, _, cost, _ in rows:
        if ts < to_us(SUB_START):
            continue
        event = parse_event({"id": event_id, "customer": customer, "type": etype,
                             "timestamp": datetime.fromtimestamp(ts / 1e6, UTC).isoformat(), "properties": props})
        period = CYCLE.period_containing(event.timestamp)
        total = out.setdefault((customer, ALL_EVENTS, to_us(period.start)), [to_us(period.end), 0, 0, 0])
        total[2] += 1  # every event of the period, metered or not
        total[3] += cost
        for meter in plan.meters:
            if meter.aggregation not in ("count", "sum", "max") or not meter.matches(etype, props):
                continue
            value = meter_value(meter, event)
            units = 0 if value is None else int(value * 1_000_000)
            if value is not None and units != value * 1_000_000:
                total[1] += 1  # rounded: the `*` row counts the period's inexact values
                units = int((value * 1_000_000).to_integral_value(rounding=ROUND_HALF_EVEN))
            slot = out.setdefault((customer, meter.key, to_us(period.start)), [to_us(period.end), 0, 0, 0])
            slot[1] = max(slot[1], units) if meter.aggregation == "max" else slot[1] + units
            slot[2] += 1
            slot[3] += cost
    return {k: tuple(v) for k, v in out.items()}
