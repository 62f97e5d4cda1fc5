"""The engine's two parts of one invoice (``RatingInput.part``): the advance fees' lines
and the rest partition the whole invoice line by line, whatever the seats, usage, credits
and trial; and a seat fee's ``on_decrease`` (next period, or the unused time credited)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import parse_plan_text
from billing.rating.engine import RatingInput, rate_period
from billing.rating.periods import calendar_month
from billing.rating.types import CreditGrant, MeterTotals

D = Decimal
NOV = calendar_month(2026, 11)  # 30 days, UTC

PLAN = """
plan: t
name: T
effective_from: 2026-01-01T00:00:00Z
billing: {{advance_fees: at_period_start}}
fees:
  - {{type: flat, key: base, amount: "19.99"}}
  - {{type: flat, key: support, amount: "5.55", timing: arrears}}
  - {{type: per_seat, key: seat, unit_price: "7.77", min_seats: 1, on_decrease: {on_decrease}}}
  - {{type: per_seat, key: seat_arrears, unit_price: "3.33", timing: arrears}}
meters: [{{key: req, event_type: request}}]
charges:
  - key: req
    meter: req
    included: {{per_seat: 10}}
    price: {{model: per_unit, unit_price: "0.333"}}
minimum_commitment: {{amount: "60"}}
"""
NEXT = parse_plan_text(PLAN.format(on_decrease="next_period"))
CREDIT = parse_plan_text(PLAN.format(on_decrease="credit_unused"))


def nov(day: int) -> datetime:
    return datetime(2026, 11, day, tzinfo=UTC)


@st.composite
def inputs(draw):
    seats = [(NOV.start, draw(st.integers(0, 5)))]
    for _ in range(draw(st.integers(0, 4))):
        seats.append((NOV.start + timedelta(seconds=draw(st.integers(1, 30 * 86400 - 1))), draw(st.integers(0, 9))))
    grants = [CreditGrant("g", draw(st.decimals(0, 30, places=2, allow_nan=False, allow_infinity=False)))]
    trial = draw(st.one_of(st.none(), st.integers(1, 40)))
    until = draw(st.one_of(st.none(), st.integers(2, 29)))
    return dict(usage={"req": MeterTotals(D(draw(st.integers(0, 300))), 1)}, seat_changes=seats, grants=grants,
                trial_end=None if trial is None else NOV.start + timedelta(days=trial),
                active_until=None if until is None else nov(until))


@settings(max_examples=80, deadline=None)
@given(inp=inputs(), plan=st.sampled_from([NEXT, CREDIT]))
def test_the_advance_and_arrears_parts_partition_the_whole_invoice(inp, plan):
    whole, ahead, behind = (rate_period(RatingInput(plan, "c", NOV, part=part, **inp))
                            for part in ("whole", "advance", "arrears"))
    assert ahead.total + behind.total == whole.total
    assert sorted(map(repr, ahead.lines + behind.lines)) == sorted(map(repr, whole.lines))
    assert all(ln.advance and ln.kind == "fee" for ln in ahead.lines)
    assert {ln.key for ln in ahead.lines} <= {"base", "seat"}  # the arrears-timed fees wait for the period's end
    assert ahead.credits_used == {} and behind.credits_used == whole.credits_used


def seat_lines(plan, changes, part="whole"):
    inv = rate_period(RatingInput(plan, "c", NOV, {}, changes, part=part))
    return [(ln.description, ln.amount) for ln in inv.lines if ln.key == "seat"]


def test_a_decrease_waits_for_the_next_period_by_default():
    # 4 seats, 6 from Nov 16 (2 added, 15/30 left), 3 from Nov 21: no change this period
    changes = [(NOV.start, 4), (nov(16), 6), (nov(21), 3)]
    assert seat_lines(NEXT, changes) == [("seat (4 seats)", D("31.08")),
                                         ("seat: 2 seat(s) added 2026-11-16, prorated 50.00%", D("7.77"))]


def test_credit_unused_credits_the_removed_seats_remaining_time():
    # ... with on_decrease: credit_unused, 3 seats removed on Nov 21 with 10/30 left:
    # -3 x 7.77 x 1/3 = -7.77; adding one back on Nov 26 (5/30 left) bills it again
    changes = [(NOV.start, 4), (nov(16), 6), (nov(21), 3), (nov(26), 4)]
    assert seat_lines(CREDIT, changes) == [
        ("seat (4 seats)", D("31.08")),
        ("seat: 2 seat(s) added 2026-11-16, prorated 50.00%", D("7.77")),
        ("seat: 3 seat(s) removed 2026-11-21, unused 33.33% credited", D("-7.77")),
        ("seat: 1 seat(s) added 2026-11-26, prorated 16.67%", D("1.30"))]
    assert seat_lines(CREDIT, changes, "advance") == [("seat (4 seats)", D("31.08"))]


def test_min_seats_floors_a_credited_decrease():
    # 3 seats down to 0 with min_seats 1: only 2 seats' unused time is credited
    assert seat_lines(CREDIT, [(NOV.start, 3), (nov(16), 0)])[1:] == [
        ("seat: 2 seat(s) removed 2026-11-16, unused 50.00% credited", D("-7.77"))]
