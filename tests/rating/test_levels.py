"""The value aggregations (``billing.rating.levels`` through ``meters.aggregate``) against a
plain reference written here, on random event streams: values before, inside and after the
period, events without the value, events the filter leaves out, several at one instant, and
exact replays (counted once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

from hypothesis import given, settings, strategies as st

from billing.catalog import parse_plan_text
from billing.events import UsageEvent
from billing.rating.meters import aggregate

PLAN = parse_plan_text("""
plan: levels
name: Levels
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: gb_hours, event_type: size, aggregation: time_weighted_sum, property: gb, time_unit: hour,
     filter: {region: {not: test}}}
  - {key: gb_days, event_type: size, aggregation: time_weighted_sum, property: gb, time_unit: day}
  - {key: latest, event_type: size, aggregation: latest, property: gb, filter: {region: {not: test}}}
  - {key: low, event_type: size, aggregation: min, property: gb}
  - {key: mean, event_type: size, aggregation: avg, property: gb, filter: {region: {in: [eu, us]}}}
""", "levels.yaml")
START, END = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
PLACES = Decimal("1e-12")

instants = st.integers(-10 * 86_400, 40 * 86_400).map(lambda s: START + timedelta(seconds=s))
values = st.one_of(st.none(), st.integers(0, 1000), st.decimals(0, 100, places=3))


@st.composite
def streams(draw) -> list[UsageEvent]:
    events: list[UsageEvent] = []
    for i in range(draw(st.integers(0, 25))):
        gb = draw(values)
        props = {} if gb is None else {"gb": gb}
        region = draw(st.sampled_from([None, "eu", "us", "test"]))
        if region:
            props["region"] = region
        ts = draw(instants) if not events or draw(st.integers(0, 3)) else draw(st.sampled_from(events)).timestamp
        events.append(UsageEvent(id=f"e{draw(st.integers(0, 99))}-{i}", customer="c", type="size", timestamp=ts,
                                 properties=props))
    replays = draw(st.lists(st.sampled_from(events), max_size=3)) if events else []
    return events + replays


def rounded(x: Fraction) -> Decimal:
    return (Decimal(x.numerator) / Decimal(x.denominator)).quantize(PLACES, rounding=ROUND_HALF_EVEN) \
        if x.denominator != 1 else Decimal(x.numerator)


def reference(events: list[UsageEvent]) -> dict[str, Decimal]:
    unique = {e.id: e for e in events}.values()

    def valued(region_ok) -> list[tuple[datetime, str, Fraction]]:
        return sorted((e.timestamp, e.id, Fraction(str(e.properties["gb"]))) for e in unique
                      if "gb" in e.properties and region_ok(e.properties.get("region")))

    def level_at(found, t: datetime) -> Fraction:  # the last value reported at or before t
        before = [v for ts, _, v in found if ts <= t]
        return before[-1] if before else Fraction(0)

    def integral(found, seconds: int) -> Decimal:
        cuts = sorted({START, END, *(ts for ts, _, _ in found if START < ts < END)})
        total = sum((level_at(found, a) * Fraction(int((b - a).total_seconds() * 1_000_000), seconds * 1_000_000)
                     for a, b in zip(cuts, cuts[1:])), Fraction(0))
        return rounded(total)

    not_test = valued(lambda r: r != "test")
    every = valued(lambda r: True)
    eu_us = [v for ts, _, v in valued(lambda r: r in ("eu", "us")) if START <= ts < END]
    in_period = [v for ts, _, v in not_test if START <= ts < END]
    return {
        "gb_hours": integral(not_test, 3600),
        "gb_days": integral(every, 86_400),
        "latest": rounded(in_period[-1]) if in_period else Decimal(0),  # (3 decimals at most: exact)
        "low": rounded(min((v for ts, _, v in every if START <= ts < END), default=Fraction(0))),
        "mean": rounded(sum(eu_us, Fraction(0)) / len(eu_us)) if eu_us else Decimal(0),
    }


@settings(max_examples=150, deadline=None)
@given(events=streams())
def test_value_aggregations_equal_the_reference(events):
    got = aggregate(PLAN, events, START, END)
    want = reference(events)
    assert {k: got[k].units for k in want} == want


def test_a_level_holds_across_the_period_and_ties_go_to_the_greatest_id():
    events = [UsageEvent(id=i, customer="c", type="size", timestamp=t, properties={"gb": gb})
              for i, t, gb in [("a", START - timedelta(days=5), 3), ("b2", START + timedelta(days=1), 9),
                               ("b10", START + timedelta(days=1), 1)]]
    got = aggregate(PLAN, events, START, END)
    assert got["gb_days"].units == 3 * 1 + 9 * 30  # "b2" > "b10" as text: 9 holds from Oct 2
    assert got["latest"].units == 9 and got["low"].units == 1 and got["mean"].units == 0
    assert got["gb_days"].events == 2  # the events inside the period; the carried level is not one
