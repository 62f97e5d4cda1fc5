"""``CounterPlanner.add_many`` (group by group, the ingestion hot path) gives exactly the
counter deltas of ``CounterPlanner.add`` event by event, whatever the order of the rows,
the subscriptions (several per customer, starting and ending mid-period, calendar or
anniversary cycles, in several timezones) and the meters (count / sum / max, filters,
multipliers). Pure: no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from billing.ledger.counters import CounterPlanner, SubscriptionView
from billing.store.types import to_us
from tests.support.db import catalog_with_extras
from tests.support.event_strategies import event_lists

CATALOG = catalog_with_extras()
PLANS = [p for p in CATALOG.all()]
BASE = datetime(2026, 9, 20, tzinfo=UTC)
CUSTOMERS = ["c1", "c2", "c3"]


@st.composite
def subscriptions(draw) -> list[SubscriptionView]:
    subs = []
    for i in range(draw(st.integers(0, 5))):
        start = BASE + timedelta(hours=draw(st.integers(0, 24 * 80)))
        end = start + timedelta(hours=draw(st.integers(1, 24 * 60))) if draw(st.booleans()) else None
        subs.append(SubscriptionView(
            i + 1, draw(st.sampled_from(CUSTOMERS)), draw(st.sampled_from(PLANS)),
            draw(st.sampled_from(["UTC", "Europe/Paris", "America/Los_Angeles", "Asia/Kolkata"])),
            to_us(start), to_us(start), None if end is None else to_us(end)))
    return subs


@st.composite
def rows(draw) -> list[tuple]:
    out = []
    for event in draw(event_lists()):
        ts = datetime.fromisoformat(event["timestamp"])
        out.append((draw(st.sampled_from(CUSTOMERS)), event["id"], event["type"], to_us(ts), "{}", None,
                    draw(st.integers(0, 10**9)), event["properties"]))
    return out


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subs=subscriptions(), events=rows(), order=st.sampled_from(["as_drawn", "sorted", "reversed"]))
def test_add_many_equals_add_event_by_event(subs, events, order):
    one_by_one = CounterPlanner(subs)
    for customer, _, etype, ts, _, _, cost, props in events:
        one_by_one.add(customer, etype, ts, props, cost)
    if order == "sorted":
        events = sorted(events, key=lambda r: (r[0], r[1]))
    elif order == "reversed":
        events = events[::-1]
    shared: dict = {}
    grouped = CounterPlanner(subs, shared)
    half = len(events) // 2
    grouped.add_many(events[:half])
    grouped.add_many(events[half:])
    assert grouped.deltas == one_by_one.deltas
    again = CounterPlanner(subs, shared)  # the period cache shared between batches changes nothing
    again.add_many(events)
    assert again.deltas == one_by_one.deltas
