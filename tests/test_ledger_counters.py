"""Running usage counters (``usage_counter``) on SQLite and PostgreSQL: each counter equals
the sum of its events (per customer, meter and billing period of the subscription), and
for count / sum meters without disputes it agrees with the SQL aggregation that invoices
use (outcome disputes are settled at rating, so dispute meters count every outcome)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from hypothesis import HealthCheck, given, settings, strategies as st

from billing.events import parse_event
from billing.ledger.counters import ALL_EVENTS
from billing.ledger.aggregate_sql import aggregate_meters, max_event_id
from billing.ledger.types import to_us
from billing.rating.meters import meter_value
from billing.rating.periods import BillingCycle
from conftest_db import module_db_url, module_engine  # noqa: F401  (fixtures)
from db import World, catalog_with_extras, counter_rows, stored_events
from test_ledger_aggregate import event_lists

CATALOG = catalog_with_extras()
SUB_START = datetime(2026, 10, 1, tzinfo=UTC)  # events before it (from Sep 25) count in no counter
NOW = datetime(2026, 12, 31, tzinfo=UTC)
CYCLE = BillingCycle("month", "calendar", "UTC")
_examples = itertools.count(1)


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
            if meter.aggregation == "unique_count" or not meter.matches(etype, props):
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


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(events=event_lists(), batches=st.integers(1, 3))
def test_counters_equal_their_events_and_the_sql_aggregation(module_engine, events, batches):
    n = next(_examples)
    world = World(module_engine, CATALOG, NOW)
    plans = CATALOG.all()
    customers = {}
    for i, plan in enumerate(plans):
        cid = f"cnt{n}_{i}"
        world.accounts.create_customer(cid, now=SUB_START)
        world.accounts.subscribe(cid, plan.plan, at=SUB_START, seats=2)
        customers[cid] = plan
    raws = [{**e, "customer": cid} for cid in customers for e in events]
    size = max(1, len(raws) // batches)
    for i in range(0, len(raws), size):  # counters are increments: several batches add up
        assert world.record(raws[i:i + size]).accepted == len(raws[i:i + size])

    counters = counter_rows(module_engine)
    with module_engine.connect() as conn:
        watermark = max_event_id(conn)
        for cid, plan in customers.items():
            rows = stored_events(module_engine, cid)
            mine = {k: v for k, v in counters.items() if k[0] == cid}
            assert mine == expected_counters(plan, cid, rows), plan.ref
            for (_, meter_key, start), (end, units, count, cost) in mine.items():
                if meter_key == ALL_EVENTS:
                    continue
                meter = plan.meter(meter_key)
                if meter.aggregation not in ("count", "sum") or meter.disputes:
                    continue
                sql = aggregate_meters(conn, plan, [cid], start, end, watermark)[cid][meter_key]
                assert (Decimal(units) / 1_000_000, count, Decimal(cost) / 10 ** 12) == \
                       (sql.units, sql.events, sql.cost), f"{plan.ref} {meter_key}"
