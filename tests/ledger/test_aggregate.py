"""SQL aggregation (``aggregate_meters``) equals the pure Python ``aggregate`` for every
meter of every shipped plan (plus test plans with max, unique_count, weighted sums,
list filters, a short dispute window and per-transaction percentages, and the value
aggregations -- latest, min, avg, time-weighted sums -- with filter operators), on random
events stored through the ledger in several batches (later batches carry earlier, "late",
timestamps; some events are replayed as duplicates; some share an instant, so ties are
broken by event id), on SQLite and PostgreSQL.

Each hypothesis example uses a fresh customer in one database per module (the SQL is
scoped by customer, so examples cannot see each other)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from billing.catalog.schema import PercentagePrice
from billing.events import parse_event
from billing.store.aggregate_sql import aggregate_meters, max_event_id
from billing.store.types import to_us
from billing.rating.charges.percentage import needs_transactions
from billing.rating.meters import aggregate
from billing.rating.types import MeterTotals
from tests.support.db import World, catalog_with_extras, stored_events
from tests.support.event_strategies import event_lists

CATALOG = catalog_with_extras()
PLANS = CATALOG.all()
NOW = datetime(2026, 12, 31, tzinfo=UTC)
PICO = Decimal(10) ** 12
WINDOWS = [(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)),
           (datetime(2026, 10, 10, 6, tzinfo=UTC), datetime(2026, 10, 20, 18, tzinfo=UTC))]
_customers = itertools.count(1)
FILLER = [f"nobody{i}" for i in range(501)]  # more customers than one IN (...) chunk



def python_totals(plan, events, start, end, costs) -> dict[str, MeterTotals]:
    parsed = [parse_event(e) for e in events]
    return aggregate(plan, parsed, start, end, cost_of=lambda e: costs[e.id])


def assert_same(plan, sql: dict[str, MeterTotals], py: dict[str, MeterTotals]) -> None:
    assert set(sql) == {m.key for m in plan.meters}
    for meter in plan.meters:
        s, p = sql[meter.key], py[meter.key]
        assert (s.units, s.events, s.cost) == (p.units, p.events, p.cost), f"{plan.ref} meter {meter.key}"
        wants_transactions = any(c.meter == meter.key and isinstance(c.price, PercentagePrice)
                                 and needs_transactions(c.price) for c in plan.charges)
        if wants_transactions:
            assert s.transactions == p.transactions, f"{plan.ref} meter {meter.key} transactions"
        assert s.groups == p.groups, f"{plan.ref} meter {meter.key} per-value totals"
        assert bool(p.groups) <= (meter.key in plan.compiled.group_meters)


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(events=event_lists(), window=st.sampled_from(WINDOWS), cut=st.floats(0, 1), data=st.data())
def test_sql_aggregation_equals_python(module_engine, events, window, cut, data):
    customer = f"agg{next(_customers)}"
    world = World(module_engine, CATALOG, NOW)
    world.accounts.create_customer(customer, now=NOW)
    raws = [{**e, "customer": customer} for e in events]
    for i, e in enumerate(raws):  # some events at the instant of an earlier one of their type: ties (by id)
        same = [r for r in raws[:i] if r["type"] == e["type"]]
        if same and data.draw(st.integers(0, 2), label="tie") == 0:
            raws[i] = {**e, "timestamp": data.draw(st.sampled_from(same), label="with")["timestamp"]}
    late_first = sorted(raws, key=lambda e: e["timestamp"], reverse=data.draw(st.booleans(), label="late"))
    batches = data.draw(st.integers(1, 3), label="batches")
    size = max(1, len(raws) // batches)
    replays = data.draw(st.lists(st.sampled_from(raws), max_size=4), label="replays") if raws else []
    for i in range(0, len(late_first), size):  # newest first: each later batch is late
        result = world.record(late_first[i:i + size])
        assert result.accepted == len(late_first[i:i + size]), result.to_json()
    if replays:  # exact replays: duplicates, counted once
        assert world.record(replays).count("duplicate") == len(replays)
    rows = stored_events(module_engine, customer)
    costs = {e: Decimal(cost) / PICO for _, e, _, _, _, _, cost, _ in rows}
    start, end = window
    with module_engine.connect() as conn:
        watermark = max_event_id(conn)
        for plan in PLANS:
            sql = aggregate_meters(conn, plan, [customer], to_us(start), to_us(end), watermark)[customer]
            assert_same(plan, sql, python_totals(plan, raws + replays, start, end, costs))
            # many customers at once (one scan of the window) gives the same answer
            many = aggregate_meters(conn, plan, [customer, *FILLER], to_us(start), to_us(end), watermark)
            assert many[customer] == sql
        # a snapshot: only the events up to a given id count (disputes included)
        if rows:
            upto = rows[int(cut * (len(rows) - 1))][7]
            seen = {e for _, e, *_, i in rows if i <= upto}
            for plan in PLANS:
                sql = aggregate_meters(conn, plan, [customer], to_us(start), to_us(end), upto)[customer]
                assert_same(plan, sql, python_totals(plan, [r for r in raws if r["id"] in seen], start, end, costs))


def test_customers_are_aggregated_separately(module_engine):
    world = World(module_engine, CATALOG, NOW)
    a, b = f"agg{next(_customers)}", f"agg{next(_customers)}"
    for c in (a, b):
        world.accounts.create_customer(c, now=NOW)
    ts = "2026-10-05T00:00:00Z"
    world.record([
        {"id": "1", "customer": a, "type": "outcome", "timestamp": ts, "properties": {"outcome": "resolution",
                                                                                    "outcome_id": "x"}},
        {"id": "1", "customer": b, "type": "outcome", "timestamp": ts, "properties": {"outcome": "resolution",
                                                                                    "outcome_id": "x"}},
        # b disputes its own outcome "x": a's outcome with the same id stays billable
        {"id": "2", "customer": b, "type": "outcome.disputed", "timestamp": "2026-10-06T00:00:00Z",
         "properties": {"outcome_id": "x"}},
    ])
    plan = CATALOG.get("support-resolutions", 1)
    with module_engine.connect() as conn:
        got = aggregate_meters(conn, plan, [a, b], to_us(WINDOWS[0][0]), to_us(WINDOWS[0][1]), max_event_id(conn))
    assert got[a]["resolutions"].units == 1
    assert got[b]["resolutions"].units == 0


def test_boolean_filter_and_unique_values(module_engine):
    """Property values are compared as Python's str() of the JSON value, in SQL too."""
    from billing.catalog import parse_plan_text

    plan = parse_plan_text("""
plan: bools
version: 1
name: booleans
effective_from: 2026-01-01T00:00:00Z
meters:
  - key: flagged
    event_type: agent.step
    aggregation: count
    filter: {flag: true}
  - key: distinct_flags
    event_type: agent.step
    aggregation: unique_count
    property: flag
""")
    customer = f"agg{next(_customers)}"
    world = World(module_engine, CATALOG, NOW)
    world.accounts.create_customer(customer, now=NOW)
    values = [True, False, "True", 1, "1", None, "true"]
    raws = [{"id": f"b{i}", "customer": customer, "type": "agent.step", "timestamp": "2026-10-05T00:00:00Z",
             "properties": {"flag": v}} for i, v in enumerate(values)]
    assert world.record(raws).accepted == len(raws)
    start, end = WINDOWS[0]
    with module_engine.connect() as conn:
        sql = aggregate_meters(conn, plan, [customer], to_us(start), to_us(end), max_event_id(conn))[customer]
    py = python_totals(plan, raws, start, end, {r["id"]: Decimal(0) for r in raws})
    assert_same(plan, sql, py)


def test_value_aggregations_at_one_instant_and_across_the_period_start(module_engine):
    """Ties at one instant go to the greatest event id (code point order: "b10" < "b9"), in
    SQL as in Python; a time-weighted level carries in from before the period."""
    plan = CATALOG.get("agg-levels", 1)
    customer = f"agg{next(_customers)}"
    world = World(module_engine, CATALOG, NOW)
    world.accounts.create_customer(customer, now=NOW)
    at = "2026-10-05T00:00:00Z"
    raws = [{"id": eid, "customer": customer, "type": "agent.step", "timestamp": ts, "properties": {"units": u}}
            for eid, ts, u in [("b10", at, 7), ("b9", at, 3), ("a1", "2026-09-30T00:00:00Z", 2),
                               ("c1", "2026-10-31T00:00:00Z", 1)]]
    assert world.record(raws).accepted == len(raws)
    start, end = WINDOWS[0]
    with module_engine.connect() as conn:
        sql = aggregate_meters(conn, plan, [customer], to_us(start), to_us(end), max_event_id(conn))[customer]
    py = python_totals(plan, raws, start, end, {r["id"]: Decimal(0) for r in raws})
    assert_same(plan, sql, py)
    assert sql["latest_units"].units == 1  # c1, the last instant
    # 2 from Oct 1 to Oct 5 (carried in), then b9's 3 (b9 > b10) until Oct 31, then 1 for a day
    assert sql["unit_hours"].units == 2 * 96 + 3 * 26 * 24 + 1 * 24
    assert sql["min_units"].units == 1 and sql["avg_steps"].units == 0
