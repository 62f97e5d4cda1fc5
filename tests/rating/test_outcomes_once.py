"""Outcome meters that count once: a ``unique_count`` meter with ``disputes`` counts each
distinct id with at least one outcome in the period not disputed inside its window, in
the Python aggregation and the invoice (exact against a plain reference)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import PlanInvalid, parse_plan_text
from billing.events import UsageEvent
from billing.rating.engine import RatingInput, rate_period
from billing.rating.meters import aggregate
from billing.rating.periods import calendar_month
from tests.support.outcomes import CONVERSATIONS_YAML, SCENARIO, SCENARIO_BILLED

D = Decimal
OCT = calendar_month(2026, 10)
PLAN = parse_plan_text(CONVERSATIONS_YAML, "conversations.yaml")
WINDOW = timedelta(days=2)


def reference(events: list[dict]) -> int:
    """Distinct conversations resolved in October by an event no reopening followed
    within two days (reopenings after October count too: they are known)."""
    def at(e: dict) -> datetime:
        return datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))

    reopened = [(e["properties"]["conversation_id"], at(e)) for e in events if e["type"] == "conversation.reopened"]
    billed = set()
    for e in events:
        when, conv = at(e), e["properties"]["conversation_id"]
        if e["type"] != "conversation.resolved" or not OCT.start <= when < OCT.end:
            continue
        if not any(c == conv and when <= t <= when + WINDOW for c, t in reopened):
            billed.add(conv)
    return len(billed)


def rated(events: list[dict]):
    parsed = [UsageEvent.model_validate({**e, "customer": "c"}) for e in events]
    usage = aggregate(PLAN, parsed, OCT.start, OCT.end)
    return usage, rate_period(RatingInput(PLAN, "c", OCT, usage))


@st.composite
def histories(draw) -> list[dict]:
    events = []
    for i in range(draw(st.integers(0, 20))):
        kind = draw(st.sampled_from(["conversation.resolved", "conversation.resolved", "conversation.reopened"]))
        when = datetime(2026, 9, 29, tzinfo=UTC) + timedelta(hours=draw(st.integers(0, 24 * 36)))
        events.append({"id": f"e{i}", "type": kind, "timestamp": when.isoformat().replace("+00:00", "Z"),
                       "properties": {"conversation_id": draw(st.sampled_from(["a", "b", "c", "d", "e"]))}})
    return events


@settings(max_examples=200, deadline=None)
@given(histories())
def test_each_conversation_counts_once_unless_reopened_within_the_window(events):
    usage, invoice = rated(events)
    expected = reference(events)
    assert usage["resolved"].units == expected
    assert invoice.total == D("1.50") * expected


def test_the_worked_scenario():
    usage, invoice = rated(SCENARIO)
    assert reference(SCENARIO) == SCENARIO_BILLED == usage["resolved"].units
    assert invoice.total == D("4.50")


@pytest.mark.parametrize("aggregation", ["sum", "max"])
def test_disputes_on_other_aggregations_are_a_named_problem(aggregation):
    text = CONVERSATIONS_YAML.replace("aggregation: unique_count", f"aggregation: {aggregation}")
    with pytest.raises(PlanInvalid) as info:
        parse_plan_text(text, "bad.yaml")
    assert [(p.path, p.line) for p in info.value.problems] == [("meters[0].disputes", 10)]
    assert "count and unique_count" in info.value.problems[0].message
