"""Running usage counters (``usage_counter``) on SQLite and PostgreSQL: each counter equals
the sum of its events (per customer, meter and billing period of the subscription), and
for count / sum meters without disputes it agrees with the SQL aggregation that invoices
use (outcome disputes are settled at rating, so dispute meters count every outcome)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from billing.ledger.counters import ALL_EVENTS
from billing.store.aggregate_sql import aggregate_meters, max_event_id
from tests.support.counters import SUB_START, expected_counters
from tests.support.db import World, catalog_with_extras, counter_rows, stored_events
from tests.support.event_strategies import event_lists

CATALOG = catalog_with_extras()
NOW = datetime(2026, 12, 31, tzinfo=UTC)
_examples = itertools.count(1)


@pytest.mark.slow
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
