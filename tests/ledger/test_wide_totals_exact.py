"""Totals past 2^63 stay exact integers (``billing.store.wide``): a hypothesis test drives
events near the per-event limits (10^12 units, $1,000,000, weighted meters up to 30x, many
per counter, in batches of one to all) and holds every stored counter and task total equal
to the events' totals, to ``recount``'s and to the SQL aggregation, on SQLite and
PostgreSQL; the exact-sum SQL against Python; the migration that splits existing totals."""

from __future__ import annotations

import itertools
import sqlite3
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from billing.catalog import Catalog, parse_plan_text
from billing.store.aggregate_sql import aggregate_meters, aggregate_window, max_event_id
from billing.reservations.holds import Quota
from billing.events import tokens_of
from billing.ledger.recount import lock_for_recount, recount_customer
from billing.store.types import to_us
from billing.store.wide import WIDE, exact_sums, join, split, sum_sql, summed
from billing.rating.periods import BillingCycle
from tests.support.counters import SUB_START, expected_counters
from tests.support.db import World, counter_rows, engine_for_url, stored_events, task_usage_rows

PLAN = """
plan: wide-props
version: 1
name: Totals past 2^63 (tests)
effective_from: 2026-01-01T00:00:00Z
currency: USD
meters:
  - {key: input, event_type: llm.call, aggregation: sum, property: input_tokens}
  - key: output_x20
    event_type: llm.call
    aggregation: sum
    property: output_tokens
    multipliers: {property: model, default: 20, values: {tiny: "0.5"}}
  - {key: peak, event_type: llm.call, aggregation: max, property: input_tokens}
  - key: peak_x30
    event_type: llm.call
    aggregation: max
    property: output_tokens
    multipliers: {property: model, default: 30, values: {tiny: "0.5"}}
  - {key: calls, event_type: llm.call, aggregation: count}
  - {key: big_calls, event_type: llm.call, aggregation: count, filter: {size: big}}
  - {key: units, event_type: agent.step, aggregation: sum, property: units}
  - {key: max_units, event_type: agent.step, aggregation: max, property: units}
charges:
  - {key: input, meter: input, price: {model: per_unit, unit_price: "0.000001"}}
"""
CATALOG = Catalog([parse_plan_text(PLAN, "wide-props.yaml")])
NOW = datetime(2026, 12, 31, tzinfo=UTC)
CYCLE = BillingCycle("month", "calendar", "UTC")
_examples = itertools.count(1)

near_max = st.one_of(st.integers(10**12 - 1000, 10**12), st.sampled_from([10**12, 10**12 - 1, 999_999_999_999]),
                     st.integers(0, 3))
near_max_cost = st.one_of(st.just("1000000"), st.integers(999_000, 10**6).map(str),
                          st.decimals(999_999, 10**6, places=12).map(str), st.just("0.000000000001"))


@st.composite
def events(draw):
    out = []
    for i in range(draw(st.integers(1, 30))):
        day = draw(st.integers(1, 45))  # October and November: two periods
        stamp = f"2026-{10 + (day > 31)}-{(day - 1) % 31 + 1:02d}T{draw(st.integers(0, 23)):02d}:00:00Z"
        props = {"cost": draw(near_max_cost), "task": draw(st.sampled_from(["t1", "t2"]))}
        if draw(st.integers(0, 4)):
            etype = "llm.call"
            props["input_tokens"] = draw(near_max)
            if draw(st.integers(0, 3)):
                props["output_tokens"] = draw(near_max)
            props["model"] = draw(st.sampled_from(["tiny", "huge"]))
            if draw(st.booleans()):
                props["size"] = "big"
        else:
            etype = "agent.step"
            props["units"] = draw(near_max)
        out.append({"id": f"w{i}", "type": etype, "timestamp": stamp, "properties": props})
    return out


@pytest.fixture(scope="module")
def quota(module_engine):
    q = Quota(module_engine, CATALOG, clock=lambda: NOW, alerts=False)
    yield q
    q.close()


def _maximum(i: int, **props) -> dict:
    return {"id": f"w{i}", "type": "llm.call", "timestamp": f"2026-10-{1 + i % 28:02d}T12:00:00Z",
            "properties": {"cost": "1000000", "task": "t1", "input_tokens": 10**12, "output_tokens": 10**12 - i,
                           "model": "huge", **props}}


# twenty maximum events in one period: every counter past 2^63, carried in SQL and in Python
TWENTY = [_maximum(i) for i in range(20)]


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(evts=events(), cuts=st.lists(st.integers(0, 30), max_size=4))
@example(evts=TWENTY, cuts=[1, 2, 3, 10]).via("twenty maximum events, some batches of one")
@example(evts=[*TWENTY[:9], _maximum(9, model="tiny", size="big"), *TWENTY[10:]], cuts=[])
def test_counters_near_the_limits_are_exact_and_equal_the_recount_and_the_sql(module_engine, quota, evts, cuts):
    cid = f"wide{next(_examples)}"
    world = World(module_engine, CATALOG, NOW)
    world.accounts.create_customer(cid, now=SUB_START)
    world.accounts.subscribe(cid, "wide-props", at=SUB_START)
    raws = [{**e, "customer": cid} for e in evts]
    edges = sorted({0, len(raws), *(c for c in cuts if c < len(raws))})
    for lo, hi in zip(edges, edges[1:]):  # batches of one to all: carries in Python and in SQL
        result = world.record(raws[lo:hi])
        assert result.accepted == hi - lo, result.to_json()  # (the ledger counts their task usage too)

    rows = stored_events(module_engine, cid)
    expected = expected_counters(CATALOG.get("wide-props", 1), cid, rows)
    counters = counter_rows(module_engine, cid)  # every part an integer, each low part under 10^18
    assert counters == expected
    if evts is TWENTY:  # the explicit example reaches past 2^63 everywhere
        assert all(cost > 2**63 for _, _, _, cost in counters.values())

    tasks = {}
    cost_of = {row[1]: row[6] for row in rows}  # (stored in key order on PostgreSQL: matched by id)
    for raw in raws:
        slot = tasks.setdefault((cid, raw["properties"]["task"]), [0, 0, 0])
        slot[0], slot[1], slot[2] = slot[0] + 1, slot[1] + tokens_of(raw["properties"]), slot[2] + cost_of[raw["id"]]
    assert {k: v for k, v in task_usage_rows(module_engine).items() if k[0] == cid} == \
        {k: tuple(v) for k, v in tasks.items()}

    with module_engine.begin() as conn:
        lock_for_recount(conn)
        recount_customer(conn, CATALOG, cid, to_us(SUB_START))
    assert counter_rows(module_engine, cid) == expected

    plan = CATALOG.get("wide-props", 1)
    with module_engine.connect() as conn:
        watermark = max_event_id(conn)
        for (_, meter, start), (end, units, n, cost) in expected.items():
            if meter == "*":
                _, costs = aggregate_window(conn, plan, [cid], start, end, watermark)
                assert costs[cid] * 10**12 == cost
                continue
            sql = aggregate_meters(conn, plan, [cid], start, end, watermark)[cid][meter]
            window, _ = aggregate_window(conn, plan, [cid], start, end, watermark)
            assert (sql.units * 10**6, sql.events, sql.cost * 10**12) == (units, n, cost), meter
            assert window[cid][meter] == sql


def test_one_commit_whose_weighted_units_pass_2_63_alone(db_url):
    """Quota commits carry a single event's units past 2^63 (20 x 10^12 tokens) into the
    counters exactly, as ingestion does (PostgreSQL: one statement, the units as numeric)."""
    with engine_for_url(db_url) as engine:
        world = World(engine, CATALOG, NOW)
        world.accounts.create_customer("q", now=SUB_START)
        world.accounts.subscribe("q", "wide-props", at=SUB_START)
        quota = Quota(engine, CATALOG, clock=lambda: NOW, alerts=False)
        try:
            for i in range(3):
                hold = quota.reserve("q", "input", 10**12, cost=10**6, task="t9")
                event = {**_maximum(i), "timestamp": "2026-12-30T12:00:00Z"}
                assert quota.commit(hold.id, event)["event"] == "accepted"
        finally:
            quota.close()
        expected = expected_counters(CATALOG.get("wide-props", 1), "q", stored_events(engine, "q"))
        (weighted,) = [v for k, v in expected.items() if k[1] == "output_x20"]
        assert weighted[1] > 3 * 2**63
        assert counter_rows(engine, "q") == expected
        # the events name task t1 themselves (the hold's t9 only fills in a task an event lacks):
        # task usage follows the recorded event, as for every door
        assert task_usage_rows(engine)[("q", "t1")] == (3, 3 * 2 * 10**12 - 3, 3 * 10**18)


@given(n=st.integers(0, 10**40))
def test_split_and_join_are_exact(n):
    carry, low = split(n)
    assert 0 <= low < WIDE and join(carry, low) == n


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.integers(0, 10**18), max_size=40))
def test_exact_sums_on_sqlite_equal_python_past_2_63(values):
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (g INTEGER, v INTEGER)")
    conn.executemany("INSERT INTO t VALUES (1, ?)", [(v,) for v in values])
    tried = []

    def query(split_parts: bool):
        tried.append(split_parts)
        return conn.execute(f"SELECT {sum_sql('v', split_parts)} FROM t").fetchall()

    (row,) = exact_sums(query)
    assert summed(*row) == sum(values)
    assert tried == ([False] if sum(values) < 2**63 else [False, True])


def test_the_migration_splits_existing_totals(empty_db_url):
    """Revision 0005: totals past 10^18 are split into their parts; a counter SQLite had
    already turned into a float flags the counters stale (rated from events until a recount)."""
    from billing.store.db import downgrade, upgrade
    from billing.ledger.recount import counters_stale

    url = empty_db_url
    sqlite = not url.startswith("postgresql")
    upgrade(url, "0004")
    with engine_for_url(url) as engine:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO usage_counter (customer_id, meter, period_start, period_end, units_micro, events, "
                "cost_pico) VALUES ('a', 'm', 1, 2, 9000000000000000001, 9, 1000000000000000000), "
                "('a', '*', 1, 2, 0, 9, 5)")
            conn.exec_driver_sql("INSERT INTO agent_task_usage (customer_id, task_id, steps, tokens, cost_pico, "
                                 "updated_at) VALUES ('a', 't', 9, 2000000000000000003, 7, 0)")
        upgrade(url)
        assert counter_rows(engine) == {("a", "m", 1): (2, 9 * WIDE + 1, 9, WIDE), ("a", "*", 1): (2, 0, 9, 5)}
        assert task_usage_rows(engine) == {("a", "t"): (9, 2 * WIDE + 3, 7)}
        with engine.connect() as conn:
            assert not counters_stale(conn)
    if sqlite:  # a counter that had become a float (SQLite's overflow before 0005)
        downgrade(url, "0004")
        with engine_for_url(url) as engine:
            with engine.begin() as conn:
                conn.exec_driver_sql("UPDATE usage_counter SET units_micro = 1.1e19 WHERE meter = 'm'")
                conn.exec_driver_sql("DELETE FROM ledger_state")  # (the downgrade flagged the carries)
            upgrade(url)
            assert counter_rows(engine)[("a", "m", 1)] == (2, 11 * WIDE, 9, 0)  # (the downgrade dropped a carry)
            with engine.connect() as conn:
                assert counters_stale(conn)


