"""Billing periods and proration. Pure: no clock reads, no database, stdlib + dateutil.

Rules
-----
* Instants are timezone-aware and normalised to UTC. Every :class:`Period` is
  half-open ``[start, end)``, so every instant falls in exactly one period of a
  cycle and consecutive periods share their boundary (``p.end == next.start``).
* Periods are computed on the customer's local wall clock (``BillingCycle.timezone``)
  and converted to UTC with :mod:`zoneinfo`:

  - ``calendar``: a period starts at 00:00 local on the 1st of the month (Jan 1
    for ``year``). Period index ``k`` is absolute: ``year * 12 + month - 1`` for
    months, ``year`` for years.
  - ``anniversary``: period ``k`` starts at the anchor's local wall time
    ``+ relativedelta(months=k)`` (or ``years=k``), always from the *original*
    anchor, never chained, so Jan 31 -> Feb 28 (29 in leap years) -> Mar 31 ->
    Apr 30, and Feb 29 -> Feb 28 -> ... -> Feb 29 for annual cycles. ``k`` is
    relative to the anchor (period 0 starts exactly at ``anchor_at``; ``k`` may
    be negative).
* DST: a wall time is resolved with ``fold=0``. In a *gap* (spring forward,
  e.g. 02:30 on a US March change day) that means the pre-transition offset, so
  the boundary lands *after* the gap by its length (02:30 EST = 03:30 EDT). In
  a *fold* (fall back) it is the first occurrence (01:30 EDT, not EST). The one
  exception is period 0 of an anniversary cycle, which is ``anchor_at`` itself
  even if that instant is the second occurrence of a repeated wall time.
  Boundaries are strictly increasing because nominal starts are >= 28 days
  apart while UTC offsets move by hours at most.
* Proration by exact elapsed time: a seat held for 10 days of a 30-day month
  costs 10/30 of the monthly price; DST days count their real length (23h/25h).
  The fraction is (overlap in integer microseconds) / (period length in integer
  microseconds), divided as Decimals at precision 40; a segment covering the
  whole period is exactly ``Decimal(1)``. Amounts are rounded later, once per
  invoice line, by :func:`billing.money.round_line`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as _dt_timezone
from decimal import Decimal, localcontext
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.relativedelta import relativedelta

Interval = Literal["month", "year"]
Anchor = Literal["calendar", "anniversary"]

UTC = _dt_timezone.utc
PRORATION_PRECISION = 40
_MICROSECOND = timedelta(microseconds=1)

__all__ = [
    "Anchor", "BillingCycle", "Interval", "Period", "SeatSegment", "calendar_month",
    "local_to_utc", "parse_period_label", "prorate_fraction", "seat_segments",
]


def _aware_utc(t: datetime, name: str = "t") -> datetime:
    """``t`` as UTC; ValueError if naive (a naive instant is ambiguous, never guessed)."""
    if not isinstance(t, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(t).__name__}")
    if t.tzinfo is UTC:
        return t  # already UTC (the common case: instants read back from the ledger)
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {t!r}")
    return t.astimezone(UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def local_dates(start: datetime, end: datetime, timezone: str = "UTC") -> str:
    """``[start, end)`` as people read it on an invoice: the dates in the customer's time
    zone (a Paris October is ``2026-10-01 .. 2026-11-01``, not the UTC ``2026-09-30 ..
    2026-10-31``); an unknown zone reads as UTC."""
    try:
        tz = _zone(timezone)
    except ValueError:
        tz = ZoneInfo("UTC")
    return f"{_aware_utc(start).astimezone(tz).date()} .. {_aware_utc(end).astimezone(tz).date()}"


def local_to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """A naive local wall time in ``tz`` as a UTC instant (``fold=0``: see module rules)."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _micros(delta: timedelta) -> int:
    return delta // _MICROSECOND  # exact integer arithmetic on timedelta


@dataclass(frozen=True)
class Period:
    """Half-open UTC interval ``[start, end)``; ``label`` is informational (not compared)."""

    start: datetime
    end: datetime
    label: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        start, end = _aware_utc(self.start, "start"), _aware_utc(self.end, "end")
        if not start < end:
            raise ValueError(f"period start {start} must be before end {end}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        if not self.label:
            object.__setattr__(self, "label", f"{start.date()}..{end.date()}")

    def contains(self, t: datetime) -> bool:
        t = _aware_utc(t)
        return self.start <= t < self.end

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


# ``BillingCycle.period_containing``: per cycle (equal cycles are one key), the period it last
# returned. Periods partition time, so one that contains the instant asked about is the answer
# (the quota path asks about the same few cycles' current period for every customer).
_RECENT: dict["BillingCycle", "Period"] = {}
_RECENT_MAX = 4096


@dataclass(frozen=True)
class BillingCycle:
    """How a subscription's time is cut into periods (see module docstring for the rules).

    ``anchor_at`` (aware) is required for ``anniversary`` and ignored for ``calendar``.
    """

    interval: Interval = "month"
    anchor: Anchor = "calendar"
    timezone: str = "UTC"
    anchor_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.interval not in ("month", "year"):
            raise ValueError(f"interval must be 'month' or 'year', got {self.interval!r}")
        if self.anchor not in ("calendar", "anniversary"):
            raise ValueError(f"anchor must be 'calendar' or 'anniversary', got {self.anchor!r}")
        _zone(self.timezone)
        if self.anchor == "anniversary":
            if self.anchor_at is None:
                raise ValueError("anniversary cycles need anchor_at (the subscription start)")
            _aware_utc(self.anchor_at, "anchor_at")

    @property
    def tz(self) -> ZoneInfo:
        return _zone(self.timezone)  # ZoneInfo instances are cached by key

    # -- nominal (local wall clock) boundaries -------------------------------------
    def _anchor_wall(self) -> datetime:
        assert self.anchor_at is not None
        return self.anchor_at.astimezone(self.tz).replace(tzinfo=None, fold=0)

    def _wall(self, k: int) -> datetime:
        """Nominal local (naive) wall-clock start of period ``k``."""
        if self.anchor == "calendar":
            if self.interval == "month":
                year, month0 = divmod(k, 12)
                return datetime(year, month0 + 1, 1)
            return datetime(k, 1, 1)
        step = relativedelta(months=k) if self.interval == "month" else relativedelta(years=k)
        return self._anchor_wall() + step

    def _start(self, k: int) -> datetime:
        if k == 0 and self.anchor == "anniversary":
            return _aware_utc(self.anchor_at)  # type: ignore[arg-type]
        return local_to_utc(self._wall(k), self.tz)

    def _label(self, k: int) -> str:
        if self.anchor == "calendar":
            wall = self._wall(k)
            return f"{wall.year:04d}-{wall.month:02d}" if self.interval == "month" else f"{wall.year:04d}"
        return f"{self._wall(k).date()}..{self._wall(k + 1).date()}"

    # -- public API ------------------------------------------------------------------
    def period_at(self, k: int) -> Period:
        """Period number ``k`` (absolute for calendar cycles, anchor-relative for anniversary)."""
        return Period(self._start(k), self._start(k + 1), self._label(k))

    def period_index(self, t: datetime) -> int:
        """Index of the period containing ``t``: estimate from year/month, then adjust."""
        t = _aware_utc(t)
        local = t.astimezone(self.tz)
        if self.anchor == "calendar":
            base_year, base_month = 0, 1
        else:
            wall = self._anchor_wall()
            base_year, base_month = wall.year, wall.month
        if self.interval == "month":
            k = (local.year - base_year) * 12 + (local.month - base_month)
        else:
            k = local.year - base_year
        while t < self._start(k):  # at most one step in practice
            k -= 1
        while t >= self._start(k + 1):
            k += 1
        return k

    def period_containing(self, t: datetime) -> Period:
        t = _aware_utc(t)
        hit = _RECENT.get(self)  # the period last found for an equal cycle: most asks fall in it
        if hit is not None and hit.start <= t < hit.end:
            return hit
        period = self.period_at(self.period_index(t))
        if len(_RECENT) >= _RECENT_MAX:
            _RECENT.clear()
        _RECENT[self] = period
        return period

    def periods_between(self, start: datetime, end: datetime) -> list[Period]:
        """All periods overlapping ``[start, end)`` in order (empty if ``start == end``)."""
        start, end = _aware_utc(start, "start"), _aware_utc(end, "end")
        if end < start:
            raise ValueError(f"end {end} is before start {start}")
        out: list[Period] = []
        k = self.period_index(start)
        while start < end and (not out or out[-1].end < end):
            out.append(self.period_at(k))
            k += 1
        return out

    def _index_of(self, period: Period) -> int:
        k = self.period_index(period.start)
        if self.period_at(k) != period:
            raise ValueError(f"{period} is not a period of {self}")
        return k

    def next_period(self, period: Period) -> Period:
        return self.period_at(self._index_of(period) + 1)

    def previous_period(self, period: Period) -> Period:
        return self.period_at(self._index_of(period) - 1)


def calendar_month(year: int, month: int, timezone: str = "UTC") -> Period:
    """The calendar month ``year-month`` in ``timezone``, as a UTC period."""
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1..12, got {month}")
    return BillingCycle("month", "calendar", timezone).period_at(year * 12 + month - 1)


_LABEL_RE = re.compile(r"(\d{4})(?:-(\d{2}))?")


def parse_period_label(label: str, timezone: str = "UTC") -> Period:
    """Inverse of calendar labels: ``"2026-10"`` (month) or ``"2026"`` (year) in ``timezone``."""
    match = _LABEL_RE.fullmatch(label.strip())
    if not match:
        raise ValueError(f"not a calendar period label (YYYY-MM or YYYY): {label!r}")
    year, month = int(match[1]), match[2]
    if month is None:
        return BillingCycle("year", "calendar", timezone).period_at(year)
    return calendar_month(year, int(month), timezone)


# -- proration ------------------------------------------------------------------------

def prorate_fraction(segment_start: datetime, segment_end: datetime, period: Period) -> Decimal:
    """Exact time fraction of ``period`` covered by ``[segment_start, segment_end)``.

    (overlap in integer microseconds) / (period length in integer microseconds) at
    precision 40; 0 when disjoint, exactly ``Decimal(1)`` for the whole period.
    """
    start, end = _aware_utc(segment_start, "segment_start"), _aware_utc(segment_end, "segment_end")
    if end < start:
        raise ValueError(f"segment end {end} is before start {start}")
    if start <= period.start and end >= period.end:
        return Decimal(1)  # the whole period
    overlap = max(min(end, period.end) - max(start, period.start), timedelta(0))
    num, den = _micros(overlap), _micros(period.duration)
    if num == den:
        return Decimal(1)
    with localcontext() as ctx:
        ctx.prec = PRORATION_PRECISION
        return Decimal(num) / Decimal(den)


@dataclass(frozen=True)
class SeatSegment:
    """``seats`` held during ``[start, end)`` (UTC)."""

    start: datetime
    end: datetime
    seats: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _aware_utc(self.start, "start"))
        object.__setattr__(self, "end", _aware_utc(self.end, "end"))
        if not self.start < self.end:
            raise ValueError(f"segment start {self.start} must be before end {self.end}")


def seat_segments(changes: list[tuple[datetime, int]], period: Period) -> list[SeatSegment]:
    """Turn a seat history into segments tiling ``period``.

    ``changes`` maps an instant to the seat count from that instant on (any order;
    for equal instants the later entry wins; entries before the period set the
    opening count, entries at or after ``period.end`` are ignored). Seats are 0
    before the first change. The result covers ``period`` exactly, in order, with
    consecutive segments holding different counts (zero-seat segments included).
    """
    if len(changes) == 1:  # the common case: one count, set before the period (or at its start)
        t, seats = changes[0]
        if _aware_utc(t, "change instant") <= period.start and type(seats) is int and seats >= 0:
            return [SeatSegment(period.start, period.end, seats)]
    opening, inside = 0, {}
    history = sorted(((_aware_utc(t, "change instant"), n) for t, n in changes), key=lambda c: c[0])
    for t, seats in history:
        if isinstance(seats, bool) or not isinstance(seats, int) or seats < 0:
            raise ValueError(f"seat count must be a non-negative int, got {seats!r}")
        if t <= period.start:
            opening = seats
        elif t < period.end:
            inside[t] = seats  # insertion order stays sorted; later duplicates overwrite
    segments = [SeatSegment(period.start, period.end, opening)]
    for t, seats in inside.items():
        last = segments[-1]
        if seats != last.seats:
            segments[-1] = SeatSegment(last.start, t, last.seats)
            segments.append(SeatSegment(t, period.end, seats))
    return segments
