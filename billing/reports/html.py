"""Self-contained HTML reports with inline SVG charts drawn in Python: no JavaScript, no
network, no CDN -- the file opens anywhere, offline, and prints.

Charts: histogram of customer margins, cost vs revenue per customer with the break-even
line (revenue = cost), bars per segment, plans side by side. Coordinates use floats (display
only); every figure printed as text comes from the exact Decimals.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from html import escape

from billing.money import round_line
from billing.reports.stats import MARGIN_EDGES, Bin, histogram, round_pct

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#111827;max-width:1100px}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}th,td{border:1px solid #e5e7eb;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f4f6}.neg{color:#b91c1c}
.charts{display:flex;flex-wrap:wrap;gap:1.5rem}figure{margin:0}figcaption{font-size:.85rem;color:#4b5563}
svg.chart{background:#fff;border:1px solid #e5e7eb}svg text{font-size:11px;fill:#374151}
.muted{color:#6b7280;font-size:.9rem}
"""


def _f(value: Decimal | int | float | None) -> float:
    return 0.0 if value is None else float(value)


def _money(value: Decimal, currency: str = "USD") -> str:
    return str(round_line(value, currency))


def _pct(value: Decimal | None) -> str:
    r = round_pct(value)
    return "n/a" if r is None else f"{r}%"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    import math

    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def _svg_open(width: int, height: int, label: str, kind: str) -> str:
    return (f'<svg class="chart" data-chart="{kind}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
            f'<title>{escape(label)}</title>')


def histogram_svg(bins: Sequence[Bin], title: str, width: int = 520, height: int = 300) -> str:
    """Vertical bars, one per bin, labelled below."""
    left, right, top, bottom = 40, 30, 36, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = _nice_max(max((b.count for b in bins), default=0))
    n = max(len(bins), 1)
    bw = plot_w / n
    parts = [_svg_open(width, height, title, "histogram"),
             f'<text x="{left}" y="16" font-weight="bold">{escape(title)}</text>',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#9ca3af"/>']
    for i, b in enumerate(bins):
        h = plot_h * b.count / peak if peak else 0
        x = left + i * bw + 2
        y = top + plot_h - h
        colour = "#dc2626" if (b.high is not None and b.high <= 0) else "#2563eb"
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bw - 4, 1):.1f}" height="{max(h, 0.5):.1f}" '
                     f'fill="{colour}"><title>{escape(b.label())}: {b.count}</title></rect>')
        parts.append(f'<text x="{x + bw / 2 - 2:.1f}" y="{y - 3:.1f}" text-anchor="middle">{b.count}</text>')
        parts.append(f'<text transform="translate({x + bw / 2:.1f},{top + plot_h + 10}) rotate(35)" '
                     f'font-size="10">{escape(b.label())}</text>')
    parts.append("</svg>")
    return "".join(parts)


def scatter_svg(points: Sequence[tuple[Decimal, Decimal, str]], title: str, width: int = 520,
                height: int = 340) -> str:
    """Cost (x) vs revenue (y) per customer, with the break-even line revenue = cost.
    Customers below the line lose money (drawn red)."""
    left, right, top, bottom = 56, 14, 24, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    span = _nice_max(max([_f(c) for c, _, _ in points] + [_f(r) for _, r, _ in points] + [0.0]))
    sx = lambda v: left + plot_w * _f(v) / span  # noqa: E731
    sy = lambda v: top + plot_h - plot_h * _f(v) / span  # noqa: E731
    parts = [_svg_open(width, height, title, "scatter"),
             f'<text x="{left}" y="16" font-weight="bold">{escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#e5e7eb"/>',
             f'<line class="break-even" x1="{sx(0):.1f}" y1="{sy(0):.1f}" x2="{sx(span):.1f}" y2="{sy(span):.1f}" '
             f'stroke="#6b7280" stroke-dasharray="5,4"><title>break-even: revenue = cost</title></line>',
             f'<text x="{sx(span) - 4:.1f}" y="{sy(span) + 14:.1f}" text-anchor="end">break-even</text>',
             f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle">provider cost</text>',
             f'<text transform="translate(14,{top + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle">revenue</text>',
             f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
             f'<text x="{left - 4}" y="{top + 10}" text-anchor="end">{span:g}</text>',
             f'<text x="{left + plot_w}" y="{top + plot_h + 14}" text-anchor="end">{span:g}</text>']
    for cost, revenue, label in points:
        colour = "#dc2626" if cost > revenue else "#2563eb"
        parts.append(f'<circle cx="{sx(cost):.1f}" cy="{sy(revenue):.1f}" r="4" fill="{colour}" fill-opacity="0.7">'
                     f'<title>{escape(label)}: revenue {_money(revenue)}, cost {_money(cost)}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def bars_svg(groups: Sequence[tuple[str, Sequence[tuple[str, Decimal]]]], title: str, width: int = 520,
             height: int = 300, kind: str = "bars") -> str:
    """Grouped bars: ``[(group label, [(series, value), ...]), ...]``; negative values go below zero."""
    left, right, top, bottom = 60, 10, 40, 46
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [_f(v) for _, series in groups for _, v in series] or [0.0]
    hi = _nice_max(max(max(values), 0.0))
    lo = -_nice_max(-min(values)) if min(values) < 0 else 0.0
    span = hi - lo or 1.0
    y0 = top + plot_h * hi / span
    series_names = list(dict.fromkeys(name for _, series in groups for name, _ in series))
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series_names)}
    gw = plot_w / max(len(groups), 1)
    bw = (gw - 10) / max(len(series_names), 1)
    parts = [_svg_open(width, height, title, kind),
             f'<text x="{left}" y="16" font-weight="bold">{escape(title)}</text>',
             f'<line x1="{left}" y1="{y0:.1f}" x2="{left + plot_w}" y2="{y0:.1f}" stroke="#9ca3af"/>',
             f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{hi:g}</text>']
    if lo < 0:
        parts.append(f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">{lo:g}</text>')
    for i, name in enumerate(series_names):
        parts.append(f'<rect x="{left + i * 110}" y="24" width="10" height="10" fill="{colour[name]}"/>'
                     f'<text x="{left + i * 110 + 14}" y="33">{escape(name)}</text>')
    for g, (label, series) in enumerate(groups):
        for name, value in series:
            j = series_names.index(name)
            h = plot_h * abs(_f(value)) / span
            x = left + g * gw + 5 + j * bw
            y = y0 - h if _f(value) >= 0 else y0
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bw - 2, 1):.1f}" height="{max(h, 0.5):.1f}" '
                         f'fill="{colour[name]}"><title>{escape(label)} {escape(name)}: {_money(Decimal(value))}'
                         f'</title></rect>')
        parts.append(f'<text x="{left + g * gw + gw / 2:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                     f'{escape(label[:28])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
            f"<body><h1>{escape(title)}</h1>{body}</body></html>")


def _row(cells: Sequence[str], negative: bool = False) -> str:
    cls = ' class="neg"' if negative else ""
    return f"<tr{cls}>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>"


def _table(head: Sequence[str], rows: Sequence[str]) -> str:
    return "<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead><tbody>" + \
        "".join(rows) + "</tbody></table>"


# --------------------------------------------------------------------------- simulation

def simulation_html(sim, title: str = "Simulation") -> str:
    parts = [f'<p class="muted">Period {escape(sim.period.label)} · source: {escape(sim.source)}'
             + "".join(f" · {escape(x)}" for x in sim.levers.describe()) + "</p>"]
    rows = []
    actual = sim.actual_totals()
    if actual is not None:
        billed, cost = actual
        rows.append(_row(["actually billed", "", _money(billed), _money(cost), _money(billed - cost),
                          _pct((billed - cost) / billed * 100 if billed else None), ""], billed < cost))
    for plan in sim.plans:
        t = sim.total(plan.ref)
        be = t.break_even_seat_price()
        rows.append(_row([f"{plan.ref} — {plan.name}", str(t.customers), _money(t.revenue, plan.currency),
                          _money(t.cost, plan.currency), _money(t.margin, plan.currency), _pct(t.margin_pct),
                          "" if be is None else _money(be, plan.currency), str(len(sim.throttled(plan.ref)))],
                         t.margin < 0))
    parts.append("<h2>Plans side by side</h2>")
    parts.append(_table(["Plan", "Customers", "Revenue", "Provider cost", "Margin", "Margin %",
                         "Break-even / seat", "Throttled"], rows))
    comparison = [(plan.ref, [("revenue", sim.total(plan.ref).revenue), ("cost", sim.total(plan.ref).cost),
                              ("margin", sim.total(plan.ref).margin)]) for plan in sim.plans]
    parts.append('<div class="charts">' + _figure(bars_svg(comparison, "Plan comparison", kind="plans"),
                                                  "Revenue, provider cost and margin per plan.") + "</div>")
    for plan in sim.plans:
        ref = plan.ref
        results = sim.results[ref]
        parts.append(f"<h2>{escape(ref)} — {escape(plan.name)}</h2>")
        segs = sim.segments(ref)
        parts.append(_table(["Segment", "Customers", "Revenue", "Provider cost", "Margin", "Margin %"],
                            [_row([name, str(a.customers), _money(a.revenue), _money(a.cost), _money(a.margin),
                                   _pct(a.margin_pct)], a.margin < 0) for name, a in segs.items()]))
        charts = [
            _figure(histogram_svg(sim.margin_distribution(ref), "Customer margin % distribution"),
                    "Customers per margin band (red: losing money)."),
            _figure(scatter_svg([(r.cost, r.revenue, r.customer) for r in results], "Cost vs revenue per customer"),
                    "Each dot a customer; below the dashed break-even line the customer costs more than it pays."),
            _figure(bars_svg([(name, [("revenue", a.revenue), ("cost", a.cost)]) for name, a in segs.items()],
                             "By segment", kind="segments"), "Revenue and provider cost per segment."),
        ]
        parts.append('<div class="charts">' + "".join(charts) + "</div>")
        movers = sim.movers(ref, 10)
        if movers and (sim.has_actual or plan is not sim.plans[0]):
            parts.append("<h3>Biggest changes</h3>" + _table(
                ["Customer", "Segment", "Reference", "Simulated", "Change"],
                [_row([r.customer, r.segment, _money(refbill), _money(r.revenue), _money(d)]) for r, refbill, d in movers]))
        throttled = sim.throttled(ref)
        if throttled:
            parts.append(f"<p>{len(throttled)} customer(s) would have been throttled: "
                         + escape(", ".join(r.customer for r in throttled[:20])) + "</p>")
    return _page(title, "".join(parts))


# ------------------------------------------------------------------------------ margins

def margins_html(report, title: str | None = None) -> str:
    title = title or f"Margins {report.label}"
    parts = [f'<p class="muted">As of {escape(report.as_of.isoformat())} · {len(report.customers)} customers · '
             f'revenue {_money(report.revenue)} · provider cost {_money(report.cost)} · margin '
             f'{_money(report.margin)} ({_pct(report.margin_pct)})</p>']
    pcts = []
    for c in report.customers:
        if c.margin_pct is not None:
            pcts.append(c.margin_pct)
        elif c.cost > 0:
            pcts.append(Decimal("-1e9"))
    charts = [
        _figure(histogram_svg(histogram(pcts, MARGIN_EDGES), "Customer margin % distribution"),
                "Customers per margin band (red: losing money)."),
        _figure(scatter_svg([(c.cost, c.revenue, c.customer) for c in report.customers], "Cost vs revenue per customer"),
                "Below the dashed break-even line a customer costs more than it pays."),
    ]
    if report.breakdown:
        charts.append(_figure(bars_svg([(r.key, [("revenue", r.revenue), ("cost", r.cost)]) for r in report.breakdown[:12]],
                                       f"By {report.by}", kind="segments"),
                              f"Provider cost and allocated revenue per {report.by}."))
    parts.append('<div class="charts">' + "".join(charts) + "</div>")
    parts.append("<h2>Customers</h2>" + _table(
        ["Customer", "Plan", "Revenue", "Source", "Provider cost", "Margin", "Margin %", "Interactions"],
        [_row([c.customer, c.plan or "", str(c.revenue), c.source, _money(c.cost), _money(c.margin),
               _pct(c.margin_pct), str(c.interactions)], c.margin < 0) for c in report.customers]))
    if report.breakdown:
        parts.append(f"<h2>By {escape(report.by)}</h2>" + _table(
            [report.by, "Customers", "Events", "Provider cost", "Revenue", "Margin", "Margin %"],
            [_row([r.key, str(r.customers), str(r.events), _money(r.cost), _money(r.revenue), _money(r.margin),
                   _pct(r.margin_pct)], r.margin < 0) for r in report.breakdown]))
    whales = report.whales()
    if whales:
        parts.append("<h2>Whales</h2>" + _table(["Customer", "Revenue", "Provider cost", "Margin %"],
                                                [_row([w.customer, str(w.revenue), _money(w.cost), _pct(w.margin_pct)],
                                                      True) for w in whales]))
    seg = report.segments()
    parts.append("<h2>Usage segments</h2>" + _table(
        ["Metric", "P25", "P50", "P90", "P99"],
        [_row([m, *("" if v is None else str(round_line(v, "USD")) for v in ps.values())]) for m, ps in seg.items()]))
    return _page(title, "".join(parts))
