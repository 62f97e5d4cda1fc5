"""Billing periods and proration: boundaries, DST, month ends, leap years, exact fractions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal, localcontext
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

from billing.money import round_line
from billing.rating.periods import (
    BillingCycle, Period, SeatSegment, calendar_month, local_to_utc, parse_period_label,
    prorate_fraction, seat_segments,
)

UTC = timezone.utc
ZONES = ["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata",
         "Pacific/Chatham", "America/Sao_Paulo"]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(zone: str, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone), fold=fold)


instants = st.datetimes(datetime(1990, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC))


@st.composite
def cycles(draw: st.DrawFn) -> BillingCycle:
    zone = draw(st.sampled_from(ZONES))
    interval = draw(st.sampled_from(["month", "year"]))
    if draw(st.booleans()):
        return BillingCycle(interval, "calendar", zone)
    year, month = draw(st.integers(1990, 2090)), draw(st.integers(1, 12))
    day = draw(st.sampled_from([1, 15, 28, 29, 30, 31]))
    while True:  # clip to the month's length
        try:
            datetime(year, month, day)
            break
        except ValueError:
            day -= 1
    hour, minute = draw(st.sampled_from([(0, 0), (1, 30), (2, 0), (2, 30), (3, 0), (23, 59)]))
    wall = datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone), fold=draw(st.integers(0, 1)))
    return BillingCycle(interval, "anniversary", zone, wall.astimezone(UTC))  # a real instant


# -- every instant in exactly one period ---------------------------------------------

@settings(max_examples=400, deadline=None)
@given(cycle=cycles(), t=instants)
def test_every_instant_in_exactly_one_period(cycle: BillingCycle, t: datetime) -> None:
    k = cycle.period_index(t)
    p = cycle.period_containing(t)
    prev, nxt = cycle.period_at(k - 1), cycle.period_at(k + 1)
    assert p == cycle.period_at(k) and p.contains(t)
    assert prev.end == p.start and p.end == nxt.start
    assert not prev.contains(t) and not nxt.contains(t)
    assert prev.start < p.start < p.end < nxt.end
    assert cycle.next_period(p) == nxt and cycle.previous_period(p) == prev
    # boundaries are owned by the later period (half-open)
    assert cycle.period_containing(p.start) == p
    assert cycle.period_containing(p.end) == nxt
    assert cycle.period_containing(p.end - timedelta(microseconds=1)) == p
    days = p.duration / timedelta(days=1)
    assert (27 < days < 32) if cycle.interval == "month" else (364 < days < 367)


@settings(max_examples=300, deadline=None)
@given(cycle=cycles(), times=st.lists(st.one_of(instants, st.integers(-3, 3)), min_size=1, max_size=12))
def test_period_containing_remembers_only_what_it_would_compute(cycle: BillingCycle, times: list) -> None:
    """``period_containing`` keeps the period it last returned per cycle (the quota path asks
    for the current period of every customer): asked in any order, about instants far apart,
    next to or on a boundary, through equal cycles built anew, each answer is exactly the
    computed one, label included (``Period`` equality ignores labels)."""
    last = utc(2026, 10, 15)
    for step in times:
        if isinstance(step, int):  # near the last answer's boundaries (or a microsecond off)
            p = cycle.period_at(cycle.period_index(last))
            t = (p.start if step < 0 else p.end) + timedelta(microseconds=abs(step) - 2)
        else:
            t = step
        twin = BillingCycle(cycle.interval, cycle.anchor, cycle.timezone, cycle.anchor_at)
        for c in (cycle, twin):
            expected = c.period_at(c.period_index(t))
            got = c.period_containing(t)
            assert (got.start, got.end, got.label) == (expected.start, expected.end, expected.label)
            assert got.contains(t)
        last = t


@settings(max_examples=150, deadline=None)
@given(cycle=cycles(), t=instants, n=st.integers(1, 30))
def test_periods_contiguous_and_strictly_increasing(cycle: BillingCycle, t: datetime, n: int) -> None:
    k = cycle.period_index(t)
    ps = [cycle.period_at(i) for i in range(k - n, k + n)]
    for a, b in zip(ps, ps[1:]):
        assert a.start < a.end == b.start < b.end


@settings(max_examples=150, deadline=None)
@given(cycle=cycles(), a=instants, span=st.timedeltas(timedelta(0), timedelta(days=800)))
def test_periods_between_covers_range(cycle: BillingCycle, a: datetime, span: timedelta) -> None:
    b = a + span
    ps = cycle.periods_between(a, b)
    if a == b:
        assert ps == []
        return
    assert ps[0].contains(a) and ps[-1].contains(b - timedelta(microseconds=1))
    assert all(x.end == y.start for x, y in zip(ps, ps[1:]))
    assert ps[-1].end >= b


def test_naive_instants_rejected() -> None:
    cycle = BillingCycle()
    with pytest.raises(ValueError):
        cycle.period_containing(datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        cycle.period_index(datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        calendar_month(2026, 1).contains(datetime(2026, 1, 5))
    with pytest.raises(ValueError):
        BillingCycle(anchor="anniversary", anchor_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        BillingCycle(anchor="anniversary")
    with pytest.raises(ValueError):
        BillingCycle(timezone="Mars/Olympus_Mons")
    with pytest.raises(ValueError):
        Period(utc(2026, 2, 1), utc(2026, 1, 1))


# -- month ends and leap years ------------------------------------------------------------

def test_anniversary_month_end_clamps_from_original_anchor() -> None:
    cycle = BillingCycle("month", "anniversary", "UTC", utc(2028, 1, 31, 10))
    starts = [cycle.period_at(k).start for k in range(5)]
    assert starts == [utc(2028, 1, 31, 10), utc(2028, 2, 29, 10), utc(2028, 3, 31, 10),
                      utc(2028, 4, 30, 10), utc(2028, 5, 31, 10)]
    assert cycle.period_at(-1).start == utc(2027, 12, 31, 10)
    assert cycle.period_containing(utc(2028, 3, 1)).label == "2028-02-29..2028-03-31"
    non_leap = BillingCycle("month", "anniversary", "UTC", utc(2027, 1, 31))
    assert non_leap.period_at(1) == Period(utc(2027, 2, 28), utc(2027, 3, 31))
    assert non_leap.period_at(13).start == utc(2028, 2, 29)


def test_annual_anniversary_feb_29() -> None:
    cycle = BillingCycle("year", "anniversary", "UTC", utc(2028, 2, 29))
    assert [cycle.period_at(k).start for k in range(5)] == [
        utc(2028, 2, 29), utc(2029, 2, 28), utc(2030, 2, 28), utc(2031, 2, 28), utc(2032, 2, 29)]
    assert cycle.period_containing(utc(2029, 2, 28, 12)).start == utc(2029, 2, 28)
    assert cycle.period_containing(utc(2029, 2, 27, 23)).start == utc(2028, 2, 29)
    assert cycle.period_at(0).duration == timedelta(days=365)


def test_calendar_year_in_local_time() -> None:
    p = BillingCycle("year", "calendar", "Asia/Kolkata").period_containing(utc(2026, 6, 1))
    assert p == Period(utc(2025, 12, 31, 18, 30), utc(2026, 12, 31, 18, 30)) and p.label == "2026"
    assert parse_period_label("2026", "Asia/Kolkata") == p


# -- DST -------------------------------------------------------------------------------------

def test_calendar_months_new_york_across_dst() -> None:
    nov = calendar_month(2026, 11, "America/New_York")
    assert (nov.start, nov.end) == (utc(2026, 11, 1, 4), utc(2026, 12, 1, 5))
    assert nov.label == "2026-11" and nov.duration == timedelta(days=30, hours=1)
    mar = calendar_month(2026, 3, "America/New_York")
    assert (mar.start, mar.end) == (utc(2026, 3, 1, 5), utc(2026, 4, 1, 4))
    assert mar.duration == timedelta(days=31, hours=-1)
    cycle = BillingCycle(timezone="America/New_York")
    assert cycle.period_containing(utc(2026, 11, 1, 3, 59, 59)).label == "2026-10"
    assert cycle.period_containing(utc(2026, 11, 1, 4)).label == "2026-11"
    assert cycle.next_period(nov) == calendar_month(2026, 12, "America/New_York")


def test_parse_period_label_roundtrip() -> None:
    p = parse_period_label("2026-10", "Europe/London")
    assert p == calendar_month(2026, 10, "Europe/London")
    assert (p.start, p.end) == (utc(2026, 9, 30, 23), utc(2026, 11, 1))
    assert p.label == "2026-10"
    for bad in ("2026-13", "26-10", "2026/10", "Oct 2026"):
        with pytest.raises(ValueError):
            parse_period_label(bad)


def test_anniversary_wall_time_in_dst_gap_uses_fold_0() -> None:
    # 2026-03-08 02:30 does not exist in New York: resolved with the pre-gap offset (EST).
    cycle = BillingCycle("month", "anniversary", "America/New_York",
                         local("America/New_York", 2026, 1, 8, 2, 30))
    assert cycle.period_at(2).start == utc(2026, 3, 8, 7, 30)  # = 03:30 EDT
    assert cycle.period_at(3).start == utc(2026, 4, 8, 6, 30)  # 02:30 EDT
    assert local_to_utc(datetime(2026, 3, 8, 2, 30), ZoneInfo("America/New_York")) == utc(2026, 3, 8, 7, 30)


def test_anniversary_wall_time_in_fold() -> None:
    ny = "America/New_York"
    # 2026-11-01 01:30 happens twice; later periods use the first occurrence (EDT)...
    first = BillingCycle("month", "anniversary", ny, local(ny, 2026, 10, 1, 1, 30))
    assert first.period_at(1).start == utc(2026, 11, 1, 5, 30)
    # ...but period 0 is the anchor instant itself, even when it is the second occurrence.
    second = BillingCycle("month", "anniversary", ny, local(ny, 2026, 11, 1, 1, 30, fold=1))
    assert second.period_at(0).start == utc(2026, 11, 1, 6, 30)
    assert second.period_at(-1).start == utc(2026, 10, 1, 5, 30)
    assert second.period_at(1).start == utc(2026, 12, 1, 6, 30)


# -- proration ---------------------------------------------------------------------------------

def test_full_period_is_exactly_one() -> None:
    for zone in ZONES:
        p = calendar_month(2026, 3, zone)
        assert prorate_fraction(p.start, p.end, p) == Decimal(1)
        assert prorate_fraction(p.start - timedelta(days=3), p.end + timedelta(days=3), p) == Decimal(1)
    assert prorate_fraction(utc(2026, 1, 1), utc(2026, 1, 5), calendar_month(2026, 3)) == 0


def test_ten_days_of_thirty() -> None:
    nov = calendar_month(2026, 11)
    f = prorate_fraction(utc(2026, 11, 5), utc(2026, 11, 15), nov)
    assert (Decimal(30) * f).quantize(Decimal("1e-10")) == Decimal(10)
    with localcontext() as ctx:
        ctx.prec = 40
        assert f == Decimal(1) / Decimal(3)  # 1/3 to the module's 40 digits
    assert prorate_fraction(utc(2026, 11, 1), utc(2026, 11, 16), nov) == Decimal("0.5")


def test_dst_day_counts_its_real_length() -> None:
    ny = "America/New_York"
    mar = calendar_month(2026, 3, ny)  # 31 days minus 1 hour
    day = prorate_fraction(local(ny, 2026, 3, 8), local(ny, 2026, 3, 9), mar)
    with localcontext() as ctx:
        ctx.prec = 40
        assert day == Decimal(23) / Decimal(31 * 24 - 1)


@settings(max_examples=300, deadline=None)
@given(zone=st.sampled_from(ZONES), ym=st.tuples(st.integers(1990, 2099), st.integers(1, 12)),
       cuts=st.lists(st.floats(0, 1), max_size=8),
       price=st.decimals(Decimal("0.01"), Decimal("100000"), places=2))
def test_adjacent_fractions_sum_to_price(zone: str, ym: tuple[int, int], cuts: list[float],
                                         price: Decimal) -> None:
    p = calendar_month(*ym, zone)
    points = sorted({p.start + p.duration * c for c in cuts} | {p.start, p.end})
    fractions = [prorate_fraction(a, b, p) for a, b in zip(points, points[1:])]
    with localcontext() as ctx:
        ctx.prec = 60  # exact sums of 40-digit fractions
        assert round_line(sum(f * price for f in fractions), "USD") == price
        assert abs(sum(fractions) - 1) < Decimal("1e-35")
    if len(fractions) == 2:
        assert abs(sum(round_line(f * price, "USD") for f in fractions) - price) <= Decimal("0.01")


# -- seat segments ------------------------------------------------------------------------------

def test_seat_segments_examples() -> None:
    nov = calendar_month(2026, 11)
    history = [(utc(2026, 11, 11), 5), (utc(2026, 10, 3), 2), (utc(2026, 11, 21), 5),
               (utc(2026, 11, 21), 1), (utc(2026, 12, 1), 9)]
    assert seat_segments(history, nov) == [
        SeatSegment(utc(2026, 11, 1), utc(2026, 11, 11), 2),
        SeatSegment(utc(2026, 11, 11), utc(2026, 11, 21), 5),
        SeatSegment(utc(2026, 11, 21), utc(2026, 12, 1), 1),
    ]
    # seats are 0 before the first change; no-op changes do not split segments
    assert seat_segments([(utc(2026, 11, 16), 3), (utc(2026, 11, 20), 3)], nov) == [
        SeatSegment(utc(2026, 11, 1), utc(2026, 11, 16), 0),
        SeatSegment(utc(2026, 11, 16), utc(2026, 12, 1), 3),
    ]
    assert seat_segments([], nov) == [SeatSegment(nov.start, nov.end, 0)]
    assert seat_segments([(nov.start, 4)], nov) == [SeatSegment(nov.start, nov.end, 4)]
    # 10 days x 3 seats of a 30-day month at 30/seat = 30
    segs = seat_segments([(utc(2026, 11, 1), 0), (utc(2026, 11, 21), 3)], nov)
    cost = sum(s.seats * prorate_fraction(s.start, s.end, nov) * Decimal(30) for s in segs)
    assert round_line(cost, "USD") == Decimal("30.00")
    with pytest.raises(ValueError):
        seat_segments([(utc(2026, 11, 2), -1)], nov)
    with pytest.raises(ValueError):
        seat_segments([(datetime(2026, 11, 2), 1)], nov)


@settings(max_examples=200, deadline=None)
@given(history=st.lists(st.tuples(st.datetimes(datetime(2026, 10, 1), datetime(2027, 1, 1),
                                               timezones=st.just(UTC)), st.integers(0, 5)),
                        max_size=10))
def test_seat_segments_tile_the_period(history: list[tuple[datetime, int]]) -> None:
    nov = calendar_month(2026, 11, "America/New_York")
    segs = seat_segments(history, nov)
    assert segs[0].start == nov.start and segs[-1].end == nov.end
    assert all(a.end == b.start and a.seats != b.seats for a, b in zip(segs, segs[1:]))
    latest = {}
    for t, n in sorted(history, key=lambda c: c[0]):
        latest[t] = n
    for s in segs:  # the count of each segment is the last change at or before its start
        before = [n for t, n in latest.items() if t <= s.start]
        assert s.seats == (before[-1] if before else 0)
