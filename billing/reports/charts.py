"""Inline SVG charts drawn in Python: no JavaScript, no network, no fonts to fetch.

Each chart is one ``<svg class="chart" data-chart="KIND">`` with a ``<title>``, axes with
ticks and grid lines, a legend, and a ``<title>`` tooltip on every mark. Data marks (bars,
points) carry ``class="mark"``, ``data-series`` and (bars) ``data-value``: the headless-
browser test measures them after layout. Coordinates are
floats (display only); every figure printed in a page's tables comes from exact Decimals.

- :func:`histogram_svg` -- counts per bin, one series or several side by side;
- :func:`scatter_svg` -- cost (x) against revenue (y) per customer with the break-even
  line ``revenue = cost``; log-log axes when the values span more than two decades;
- :func:`bars_svg` -- grouped bars (groups x series), negative values below the zero line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from html import escape

from billing.reports.stats import Bin

BLUE, ORANGE, GREEN, RED = "#2563eb", "#f59e0b", "#059669", "#dc2626"
SERIES = {"revenue": BLUE, "cost": ORANGE, "provider cost": ORANGE, "margin": GREEN}
PLAN_COLOURS = ("#2563eb", "#7c3aed", "#0d9488", "#db2777", "#ca8a04", "#4b5563")
WIDTH, HEIGHT = 540, 330


def _f(value) -> float:
    return 0.0 if value is None else float(value)


def fmt(value: float) -> str:
    """Compact axis/label number: 0.25, 12, 1.5k, 2M."""
    a = abs(value)
    if a >= 1e6:
        text = f"{value / 1e6:.3g}M"
    elif a >= 1e4:
        text = f"{value / 1e3:.3g}k"
    elif a >= 100:
        text = f"{value:,.0f}"
    elif a == 0:
        text = "0"
    else:
        text = f"{value:.3g}"
    return text


def fmt_value(value: float, prefix: str = "", unit: str = "") -> str:
    """A bar's value label: -$48.9, $0.40, $1.5k."""
    sign = "-" if value < 0 else ""
    a = abs(value)
    text = f"{a:.2f}" if 0 < a < 1 else fmt(a)
    return f"{sign}{prefix}{text}{unit}"


def colour_of(name: str, index: int) -> str:
    return SERIES.get(name, PLAN_COLOURS[index % len(PLAN_COLOURS)])


def nice_step(span: float, target: int = 5) -> float:
    if span <= 0:
        return 1.0
    raw = span / target
    exp = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * exp:
            return m * exp
    return 10 * exp


def linear_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    step = nice_step(hi - lo, target)
    start = math.floor(lo / step) * step
    end = math.ceil(hi / step) * step
    n = int(round((end - start) / step))
    return [start + i * step for i in range(n + 1)]


def _open(kind: str, title: str, width: int = WIDTH, height: int = HEIGHT) -> list[str]:
    return [f'<svg class="chart" data-chart="{kind}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
            f'<title>{escape(title)}</title>']


def _legend(names: Sequence[str], colours: Sequence[str], x: float, y: float) -> str:
    parts, cx = [], x
    for name, colour in zip(names, colours):
        parts.append(f'<rect x="{cx:.1f}" y="{y - 9:.1f}" width="10" height="10" rx="2" fill="{colour}"/>'
                     f'<text x="{cx + 14:.1f}" y="{y:.1f}" class="legend">{escape(name)}</text>')
        cx += 22 + 6.5 * len(name)
    return "".join(parts)


def _empty(parts: list[str], width: int, height: int, message: str = "no data") -> str:
    parts.append(f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" class="muted">{message}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------------------ histogram

def histogram_svg(series: Sequence[tuple[str, Sequence[Bin]]] | Sequence[Bin], title: str, *,
                  width: int = WIDTH, height: int = HEIGHT, unit: str = "%") -> str:
    """Customers per bin; ``series`` is ``[(name, bins), ...]`` (same edges) or one bin list.
    Bins whose upper edge is at or below zero are the losing ones (red in a single series)."""
    if series and isinstance(series[0], Bin):
        series = [("customers", series)]
    left, right, top, bottom = 44, 12, 34, 58
    pw, ph = width - left - right, height - top - bottom
    parts = _open("histogram", title, width, height)
    bins = series[0][1] if series else []
    if not bins:
        return _empty(parts, width, height)
    peak = max((b.count for _, bs in series for b in bs), default=0)
    ticks = linear_ticks(0, max(peak, 1), 4)
    ticks = [t for t in ticks if t == int(t)] or [0, 1]
    top_value = ticks[-1] or 1
    sy = lambda v: top + ph - ph * v / top_value  # noqa: E731
    for t in ticks:
        parts.append(f'<line class="grid" x1="{left}" y1="{sy(t):.1f}" x2="{left + pw}" y2="{sy(t):.1f}"/>'
                     f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" class="tick">{fmt(t)}</text>')
    n, k = len(bins), len(series)
    bw = pw / n
    inner = (bw - 6) / k
    for s, (name, bs) in enumerate(series):
        for i, b in enumerate(bs):
            losing = b.high is not None and b.high <= 0
            colour = (RED if losing else BLUE) if k == 1 else colour_of(name, s)
            h = ph * b.count / top_value
            x = left + i * bw + 3 + s * inner
            faded = ' fill-opacity="0.75"' if k > 1 and losing else ""
            parts.append(f'<rect class="mark" data-series="{escape(name)}" data-value="{b.count}" '
                         f'x="{x:.1f}" y="{sy(b.count):.1f}" width="{max(inner - 1, 1):.1f}" '
                         f'height="{max(h, 0.0):.1f}" rx="1.5" fill="{colour}"'
                         f'{faded}>'
                         f'<title>{escape(name)} {escape(b.label(unit))}: {b.count} customer(s)</title></rect>')
            if b.count and k <= 2:
                parts.append(f'<text x="{x + inner / 2:.1f}" y="{sy(b.count) - 4:.1f}" text-anchor="middle" '
                             f'class="value">{b.count}</text>')
    for i, b in enumerate(bins):
        cx = left + i * bw + bw / 2
        parts.append(f'<text transform="translate({cx:.1f},{top + ph + 12}) rotate(35)" class="tick">'
                     f'{escape(b.label(unit))}</text>')
    parts.append(f'<line class="axis" x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}"/>')
    zero = next((i for i, b in enumerate(bins) if b.low is not None and b.low >= 0), None)
    if zero is not None:  # the break-even edge between losing and earning bins
        x0 = left + zero * bw
        parts.append(f'<line class="break-even" x1="{x0:.1f}" y1="{top - 4}" x2="{x0:.1f}" y2="{top + ph}">'
                     f'<title>margin 0%</title></line>'
                     f'<text x="{x0 + 3:.1f}" y="{top + 6}" class="note">0%</text>')
    parts.append(f'<text transform="translate(12,{top + ph / 2:.0f}) rotate(-90)" text-anchor="middle" '
                 f'class="axis-label">customers</text>')
    if k > 1:
        parts.append(_legend([name for name, _ in series], [colour_of(n_, i) for i, (n_, _) in enumerate(series)],
                             left, 20))
    parts.append("</svg>")
    return "".join(parts)


# -------------------------------------------------------------------------------- scatter

class _Axis:
    """Linear or log10 mapping of [lo, hi] onto [a, b] pixels."""

    def __init__(self, values: Sequence[float], a: float, b: float, log: bool):
        self.a, self.b, self.log = a, b, log
        positive = [v for v in values if v > 0]
        if log and positive:
            self.lo = 10 ** math.floor(math.log10(min(positive)))
            self.hi = 10 ** math.ceil(math.log10(max(positive)))
            if self.hi <= self.lo:
                self.hi = self.lo * 10
            self.ticks = [10 ** e for e in range(round(math.log10(self.lo)), round(math.log10(self.hi)) + 1)]
        else:
            self.log = False
            ticks = linear_ticks(0, max(values + [0.0]) or 1.0)
            self.lo, self.hi, self.ticks = 0.0, ticks[-1], ticks

    def __call__(self, v: float) -> float:
        if self.log:
            v = max(v, self.lo)
            t = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            t = (v - self.lo) / ((self.hi - self.lo) or 1)
        return self.a + (self.b - self.a) * t


def _wants_log(values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) >= 3 and max(positive) / min(positive) > 100


def scatter_svg(points: Sequence[tuple[Decimal, Decimal, str]] | Sequence[tuple[str, Sequence[tuple]]], title: str, *,
                width: int = WIDTH, height: int = HEIGHT + 30, log: bool | None = None, currency: str = "$") -> str:
    """Provider cost (x) against revenue (y) per customer, with the break-even line
    revenue = cost: customers below it cost more than they pay (red). ``points`` is
    ``[(cost, revenue, label), ...]`` or ``[(series name, points), ...]`` (one colour each).
    Both axes share one range, so the break-even line is the diagonal."""
    if points and isinstance(points[0], tuple) and len(points[0]) == 2 and not isinstance(points[0][0], Decimal):
        series = list(points)
    else:
        series = [("customers", list(points))]
    left, right, top, bottom = 58, 16, 30, 44
    pw, ph = width - left - right, height - top - bottom
    side = min(pw, ph)
    parts = _open("scatter", title, width, height)
    values = [_f(v) for _, pts in series for c, r, *_ in pts for v in (c, r)]
    if not values:
        return _empty(parts, width, height, "no customers")
    use_log = _wants_log(values) if log is None else log
    x = _Axis(values, left, left + side, use_log)
    y = _Axis(values, top + side, top, use_log)
    parts.extend(_square_grid_and_break_even(x, y, left, top, side, currency))
    many = len(series) > 1
    parts.extend(_scatter_marks(series, x, y, currency))
    scale = " (log scale; zero drawn at the axis floor)" if x.log else ""
    parts.append(f'<text x="{left + side / 2:.0f}" y="{height - 8}" text-anchor="middle" class="axis-label">'
                 f'provider cost{scale}</text>'
                 f'<text transform="translate(14,{top + side / 2:.0f}) rotate(-90)" text-anchor="middle" '
                 f'class="axis-label">revenue</text>')
    if many:  # one entry a line, right of the square plot
        for i, (name, _) in enumerate(series):
            ly = top + 10 + 18 * i
            parts.append(f'<rect x="{left + side + 14}" y="{ly - 9}" width="10" height="10" rx="2" '
                         f'fill="{colour_of(name, i)}"/><text x="{left + side + 28}" y="{ly}" class="legend">'
                         f'{escape(name[:26])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _square_grid_and_break_even(x: _Axis, y: _Axis, left: int, top: int, side: int, currency: str) -> list[str]:
    """The shared ticks and grid of the square plot, its frame, the shaded losing half-plane
    (revenue < cost) and the break-even diagonal."""
    parts: list[str] = []
    for t in x.ticks:
        parts.append(f'<line class="grid" x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{top + side}"/>'
                     f'<text x="{x(t):.1f}" y="{top + side + 14}" text-anchor="middle" class="tick">'
                     f'{currency}{fmt(t)}</text>')
        parts.append(f'<line class="grid" x1="{left}" y1="{y(t):.1f}" x2="{left + side}" y2="{y(t):.1f}"/>'
                     f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end" class="tick">{currency}{fmt(t)}</text>')
    parts.append(f'<rect class="frame" x="{left}" y="{top}" width="{side}" height="{side}" fill="none"/>')
    # the losing half-plane (revenue < cost), lightly shaded, and the break-even diagonal
    parts.append(f'<polygon points="{left},{top + side} {left + side},{top + side} {left + side},{top}" '
                 f'fill="{RED}" fill-opacity="0.05"/>')
    parts.append(f'<line class="break-even" x1="{left}" y1="{top + side}" x2="{left + side}" y2="{top}">'
                 f'<title>break-even: revenue = cost</title></line>'
                 f'<text x="{left + side - 6}" y="{top + side - 8}" text-anchor="end" class="note loss">'
                 f'losing money</text>'
                 f'<text x="{left + side * 0.62:.1f}" y="{top + side * 0.38 - 6:.1f}" class="note" '
                 f'transform="rotate(-45 {left + side * 0.62:.1f} {top + side * 0.38 - 6:.1f})">break-even</text>')
    return parts


def _scatter_marks(series: list, x: _Axis, y: _Axis, currency: str) -> list[str]:
    """One dot per customer (one colour per series); with one series, losing customers are red
    and the worst few are named."""
    parts: list[str] = []
    many = len(series) > 1
    for s, (name, pts) in enumerate(series):
        colour = colour_of(name, s)
        for cost, revenue, label, *_ in pts:
            losing = cost > revenue
            fill = colour if many else (RED if losing else BLUE)
            ring = f' stroke="{RED}" stroke-width="1.5"' if many and losing else ' stroke="#fff" stroke-width="0.8"'
            parts.append(f'<circle class="mark" data-series="{escape(name)}" cx="{x(_f(cost)):.1f}" '
                         f'cy="{y(_f(revenue)):.1f}" r="4.5" fill="{fill}" '
                         f'fill-opacity="0.8"{ring}><title>{escape(str(label))}{" — " + escape(name) if many else ""}: '
                         f'revenue {currency}{_f(revenue):,.2f}, cost {currency}{_f(cost):,.2f}</title></circle>')
    if not many:  # name the customers that lose money (the worst few)
        losing = sorted((p for p in series[0][1] if p[0] > p[1]), key=lambda p: _f(p[1]) - _f(p[0]))[:5]
        for cost, revenue, label, *_ in losing:
            parts.append(f'<text x="{x(_f(cost)) + 7:.1f}" y="{y(_f(revenue)) + 4:.1f}" class="note loss">'
                         f'{escape(str(label)[:18])}</text>')
    return parts


# ----------------------------------------------------------------------------------- bars

def bars_svg(groups: Sequence[tuple[str, Sequence[tuple[str, Decimal]]]], title: str, *, kind: str = "bars",
             width: int = WIDTH, height: int = HEIGHT, currency: str = "$", unit: str = "") -> str:
    """Grouped bars: ``[(group label, [(series, value), ...]), ...]``; negative values go
    below the zero line (margins of losing groups)."""
    rotate = any(len(label) * 6.2 > (width - 70) / max(len(groups), 1) for label, _ in groups)
    left, right, top, bottom = 58, 12, 38, 96 if rotate else 52
    pw, ph = width - left - right, height - top - bottom
    parts = _open(kind, title, width, height)
    values = [_f(v) for _, series in groups for _, v in series]
    if not values:
        return _empty(parts, width, height)
    ticks = linear_ticks(min(values + [0.0]), max(values + [0.0]))
    lo, hi = ticks[0], ticks[-1]
    span = (hi - lo) or 1.0
    sy = lambda v: top + ph * (hi - v) / span  # noqa: E731
    for t in ticks:
        parts.append(f'<line class="grid" x1="{left}" y1="{sy(t):.1f}" x2="{left + pw}" y2="{sy(t):.1f}"/>'
                     f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" class="tick">'
                     f'{fmt_value(t, currency, unit) if t else "0"}</text>')
    names = list(dict.fromkeys(name for _, series in groups for name, _ in series))
    colours = {name: colour_of(name, i) for i, name in enumerate(names)}
    gw = pw / len(groups)
    bw = min((gw - 12) / max(len(names), 1), 46)
    offset = (gw - bw * len(names)) / 2
    label_values = len(groups) * len(names) <= 16
    for g, (label, series) in enumerate(groups):
        for name, value in series:
            j = names.index(name)
            v = _f(value)
            x = left + g * gw + offset + j * bw
            y0, y1 = sorted((sy(0), sy(v)))
            colour = RED if (name == "margin" and v < 0) else colours[name]
            parts.append(f'<rect class="mark" data-series="{escape(name)}" data-value="{v!r}" '
                         f'x="{x + 1:.1f}" y="{y0:.1f}" width="{max(bw - 2, 1):.1f}" '
                         f'height="{max(y1 - y0, 0.0):.1f}" rx="1.5" fill="{colour}"><title>{escape(label)} — '
                         f'{escape(name)}: {"-" if v < 0 else ""}{currency}{abs(v):,.2f}{unit}</title></rect>')
            if label_values:
                inside = v < 0 and y1 + 12 > top + ph - 1  # no room below: write it inside the bar's end
                ty = y0 - 4 if v >= 0 else (y1 - 4 if inside else y1 + 11)
                parts.append(f'<text x="{x + bw / 2:.1f}" y="{ty:.1f}" text-anchor="middle" '
                             f'class="value{" inside" if inside else ""}">{fmt_value(v, currency, unit)}</text>')
        cx = left + g * gw + gw / 2
        if rotate:
            text = label if len(label) <= 22 else label[:21] + "…"
            parts.append(f'<text transform="translate({cx + 4:.1f},{top + ph + 12}) rotate(-40)" text-anchor="end" '
                         f'class="tick"><title>{escape(label)}</title>{escape(text)}</text>')
        else:
            parts.append(f'<text x="{cx:.1f}" y="{top + ph + 16}" text-anchor="middle" class="tick">'
                         f'<title>{escape(label)}</title>{escape(label)}</text>')
    parts.append(f'<line class="axis" x1="{left}" y1="{sy(0):.1f}" x2="{left + pw}" y2="{sy(0):.1f}"/>')
    parts.append(_legend(names, [colours[n] for n in names], left, 20))
    parts.append("</svg>")
    return "".join(parts)
