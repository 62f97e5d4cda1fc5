"""Small exact statistics shared by reports and simulations (Decimal in, Decimal out)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

ZERO = Decimal(0)
HUNDRED = Decimal(100)
PERCENTILES = (25, 50, 90, 99)


def percentile(values: Sequence[Decimal], p: int | Decimal) -> Decimal | None:
    """Nearest-rank percentile: the smallest value with at least ``p``% of values <= it
    (rank ``ceil(p/100 x n)``, at least 1). None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = int((Decimal(p) / HUNDRED * len(ordered)).to_integral_value(ROUND_CEILING))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def percentiles(values: Sequence[Decimal], ps: Sequence[int] = PERCENTILES) -> dict[str, Decimal | None]:
    return {f"p{p}": percentile(values, p) for p in ps}


def margin_pct(revenue: Decimal, cost: Decimal) -> Decimal | None:
    """Gross margin as a percentage of revenue, exact; None when there is no revenue."""
    if revenue == 0:
        return None
    return (revenue - cost) / revenue * HUNDRED


def round_pct(value: Decimal | None, places: int = 1) -> Decimal | None:
    """A percentage for display, half away from zero (86.5 -> 87 at 0 places)."""
    if value is None:
        return None
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Bin:
    low: Decimal | None  # None: open below
    high: Decimal | None  # None: open above
    count: int

    def label(self, unit: str = "%") -> str:
        if self.low is None:
            return f"< {self.high}{unit}"
        if self.high is None:
            return f">= {self.low}{unit}"
        return f"{self.low}..{self.high}{unit}"


def histogram(values: Sequence[Decimal], edges: Sequence[Decimal]) -> list[Bin]:
    """Counts in ``(-inf, e0)``, ``[e0, e1)``, ..., ``[e_last, +inf)``."""
    edges = sorted(Decimal(e) for e in edges)
    counts = [0] * (len(edges) + 1)
    for v in values:
        i = 0
        while i < len(edges) and v >= edges[i]:
            i += 1
        counts[i] += 1
    bins = [Bin(None, edges[0], counts[0])] if edges else []
    bins += [Bin(edges[i], edges[i + 1], counts[i + 1]) for i in range(len(edges) - 1)]
    bins.append(Bin(edges[-1] if edges else None, None, counts[-1]))
    return bins


MARGIN_EDGES = tuple(Decimal(x) for x in (-200, -100, -50, -25, 0, 25, 50, 75, 90))
