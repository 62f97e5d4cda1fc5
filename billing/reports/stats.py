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


def allocate(amount: Decimal, weights: Sequence[tuple[str, Decimal | int]], unit: Decimal) -> dict[str, Decimal]:
    """Split ``amount`` across keys in proportion to their weights, in whole ``unit`` s (cents)
    that sum to ``amount`` exactly: each key gets the floor of its share and the units left
    over go to the largest remainders (ties: the order given). All-zero weights split evenly.
    An amount that is not a whole number of units is split exactly instead (no rounding)."""
    if not weights:
        return {}
    ws = [(k, Decimal(w)) for k, w in weights]
    total = sum((w for _, w in ws), ZERO)
    if total == 0:
        ws, total = [(k, Decimal(1)) for k, _ in ws], Decimal(len(ws))
    units = amount / unit
    if units != units.to_integral_value():
        return {k: amount * w / total for k, w in ws}
    sign, n = (-1 if units < 0 else 1), abs(int(units))
    while any(w != w.to_integral_value() for _, w in ws):  # exact integer weights
        ws = [(k, w * 10) for k, w in ws]
    iw = [(k, int(w)) for k, w in ws]
    den = sum(w for _, w in iw)
    base = {k: n * w // den for k, w in iw}
    left = n - sum(base.values())
    order = sorted(range(len(iw)), key=lambda i: (-(n * iw[i][1] % den), i))
    for i in order[:left]:
        base[iw[i][0]] += 1
    return {k: sign * v * unit for k, v in base.items()}


USAGE_BANDS = (("light", 25), ("moderate", 50), ("regular", 90), ("heavy", 99))


def usage_bands(values: dict[str, int | Decimal]) -> dict[str, str]:
    """Each key's usage band by the nearest-rank percentiles of all values: ``light (<= P25)``,
    ``moderate (P25-P50]``, ``regular (P50-P90]``, ``heavy (P90-P99]``, ``power (> P99)``."""
    ordered = [Decimal(v) for v in values.values()]
    cuts = [(name, p, percentile(ordered, p)) for name, p in USAGE_BANDS]
    out = {}
    for key, v in values.items():
        label = "power (> P99)"
        previous = None
        for name, p, cut in cuts:
            if cut is not None and Decimal(v) <= cut:
                label = f"{name} (<= P{p})" if previous is None else f"{name} (P{previous}-P{p}]"
                break
            previous = p
        out[key] = label
    return out


def band_order(label: str) -> int:
    names = [n for n, _ in USAGE_BANDS] + ["power"]
    head = label.split(" ", 1)[0]
    return names.index(head) if head in names else len(names)
