"""The value aggregations of a meter (pure): ``latest``, ``min``, ``avg`` and
``time_weighted_sum``. One definition each, used by the Python aggregation
(``billing.rating.meters``), the ledger's event reads (``billing.store.level_sql``, the
close) and the quota's (``billing.reservations.exact``).

Rules (``plans/README.md`` "Value aggregations"):

* only events that carry the meter's property count as values (an event without it is
  still one of the meter's events, with its cost, but has no value);
* ``latest``: the value of the event with the greatest timestamp in the period; events at
  the same instant are ordered by event id (as text, code point order), the greatest wins;
* ``min``: the smallest value in the period; ``latest``, ``min`` and ``avg`` are 0 when the
  period has no value;
* ``avg``: the sum of the values / how many there are, rounded half-even to
  ``PLACES`` (12) decimal places: the quantity the charge then prices (its amount is
  rounded once to the currency, as every charge's);
* ``time_weighted_sum``: the property is a level held from each valued event until the
  next one (same customer and meter; at the same instant the greatest event id holds),
  and from the last valued event before the period into it; the sum over the period
  [start, end) of level x time held, in ``time_unit`` (second, minute, hour, day), computed
  exactly on microseconds and rounded half-even to ``PLACES`` decimal places.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from billing.catalog.schema import TIME_UNIT_SECONDS, VALUE_AGGREGATIONS

AGGREGATIONS = VALUE_AGGREGATIONS
ZERO = Decimal(0)
PLACES = 12
QUANTUM = Decimal(1).scaleb(-PLACES)
MICROS = 1_000_000


def rounded(numerator: Decimal, denominator: int | Decimal) -> Decimal:
    """``numerator / denominator`` rounded half-even to ``PLACES`` decimals (exactly: the
    division carries enough digits that the rounding is of the true quotient)."""
    if not denominator:
        return ZERO
    with localcontext() as ctx:
        ctx.prec = 100
        quotient = (Decimal(numerator) / Decimal(denominator)).quantize(QUANTUM, rounding=ROUND_HALF_EVEN)
        return quotient.normalize() + ZERO  # without trailing zeros (+ 0: 1E+2 reads 100)


def average(total: Decimal, count: int) -> Decimal:
    """The ``avg`` of ``count`` values adding up to ``total`` (0 without values)."""
    return rounded(total, count) if count else ZERO


def latest(values: Iterable[tuple[int, str, Decimal]]) -> Decimal:
    """The value of the greatest (timestamp, event id) among (ts, id, value) (0 if none)."""
    best = max(values, key=lambda v: (v[0], v[1]), default=None)
    return ZERO if best is None else best[2]


def unit_micros(time_unit: str | None) -> int:
    """Microseconds in a ``time_unit`` (a time-weighted meter must name one)."""
    if time_unit not in TIME_UNIT_SECONDS:
        raise ValueError(f"a time-weighted sum needs a time_unit (second, minute, hour or day), got {time_unit!r}")
    return TIME_UNIT_SECONDS[time_unit] * MICROS


def held_by_level(levels: Iterable[tuple[int, str, Decimal]], start_us: int, end_us: int) -> dict[Decimal, int]:
    """level -> microseconds it was held inside [start, end), from (ts, id, level) of the
    valued events (any order; those at or after ``end`` change nothing)."""
    ordered = sorted((v for v in levels if v[0] < end_us), key=lambda v: (v[0], v[1]))
    held: dict[Decimal, int] = {}
    for i, (ts, _, level) in enumerate(ordered):
        until = ordered[i + 1][0] if i + 1 < len(ordered) else end_us
        span = min(until, end_us) - max(ts, start_us)
        if span > 0:
            held[level] = held.get(level, 0) + span
    return held


def time_weighted(held: dict[Decimal, int], time_unit: str | None) -> Decimal:
    """Sum of level x time held, in ``time_unit``, from ``held_by_level``'s map."""
    numerator = sum((Decimal(level) * span for level, span in held.items()), ZERO)
    return rounded(numerator, unit_micros(time_unit))
