"""Self-contained HTML reports (margins, simulations): inline CSS and SVG charts
(``charts.py``), no JavaScript, no network, no CDN -- the file opens anywhere, offline, and
prints. Every figure in the tables comes from the exact Decimals (rounded for display)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from decimal import Decimal
from html import escape

from billing.reports.charts import PLAN_COLOURS, bars_svg, histogram_svg, scatter_svg
from billing.reports.render import count, money, pct
from billing.reports.stats import MARGIN_EDGES, histogram, margin_pct

ZERO = Decimal(0)
PICO = Decimal(10) ** 12
MAX_CUSTOMER_ROWS = 1000
CSS = """
*{box-sizing:border-box}
body{font-family:Inter,system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
  color:#0f172a;background:#f8fafc;font-size:14px;line-height:1.45}
main{max-width:1160px;margin:0 auto;padding:28px 28px 48px}
header h1{font-size:24px;margin:0 0 4px;letter-spacing:-.01em}
.sub{color:#64748b;margin:0 0 18px}
h2{font-size:16px;margin:30px 0 10px}
h3{font-size:14px;margin:18px 0 8px;color:#334155}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin:8px 0 20px}
.kpi{background:#fff;border:1px solid #e2e8f0;border-radius:10px;padding:12px 14px}
.kpi .label{color:#64748b;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.kpi .value{font-size:22px;font-weight:650;margin-top:2px;font-variant-numeric:tabular-nums}
.kpi .hint{color:#64748b;font-size:12px}
.kpi.bad .value{color:#b91c1c}.kpi.good .value{color:#047857}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:16px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:10px;padding:14px 16px}
.card h3{margin:0 0 2px}.card p{margin:0 0 8px;color:#64748b;font-size:12.5px}
.card svg{display:block;max-width:100%;height:auto}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #e2e8f0;border-radius:10px;
  overflow:hidden;font-variant-numeric:tabular-nums}
th,td{padding:7px 10px;border-bottom:1px solid #eef2f7;text-align:left;white-space:nowrap}
th{background:#f1f5f9;font-weight:600;font-size:12.5px;color:#334155}
td.num,th.num{text-align:right}
tr.total td{font-weight:650;background:#f8fafc;border-top:2px solid #e2e8f0}
tr.neg td{color:#b91c1c}tr.whale td:first-child{font-weight:600}
.tag{display:inline-block;padding:0 6px;border-radius:9px;font-size:11.5px;background:#fee2e2;color:#991b1b;margin-left:6px}
.note{color:#64748b;font-size:12.5px;margin:6px 0 0}
.sentences{margin:0 0 10px;padding-left:18px;color:#334155}
footer{margin-top:32px;color:#64748b;font-size:12.5px;border-top:1px solid #e2e8f0;padding-top:12px}
footer dt{font-weight:600;color:#334155}footer dd{margin:0 0 6px}
svg text{font-family:inherit;font-size:11px;fill:#475569}
svg .tick{font-size:10.5px;fill:#64748b}svg .value{font-size:10px;fill:#334155}svg .value.inside{fill:#fff}
svg .legend{font-size:11px;fill:#334155}svg .axis-label{font-size:11px;fill:#475569}
svg .note{font-size:10.5px;fill:#64748b}svg .note.loss{fill:#b91c1c}svg .muted{fill:#94a3b8}
svg .grid{stroke:#eef2f7;stroke-width:1}svg .axis{stroke:#94a3b8;stroke-width:1}
svg .frame{stroke:#e2e8f0}svg .break-even{stroke:#475569;stroke-width:1.2;stroke-dasharray:5 4}
@media print{body{background:#fff}.card,.kpi,table{break-inside:avoid}}
"""


# ------------------------------------------------------------------------------ building blocks

def _page(title: str, subtitle: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
            f'<body><main><header><h1>{escape(title)}</h1><p class="sub">{subtitle}</p></header>{body}</main>'
            f"</body></html>")


def _kpi(label: str, value: str, hint: str = "", tone: str = "") -> str:
    return (f'<div class="kpi {tone}"><div class="label">{escape(label)}</div><div class="value">{escape(value)}</div>'
            f'<div class="hint">{escape(hint)}</div></div>')


def _card(svg: str, title: str, caption: str) -> str:
    return f'<div class="card"><h3>{escape(title)}</h3><p>{escape(caption)}</p>{svg}</div>'


def _cell(value: str, numeric: bool) -> str:
    return f'<td class="num">{escape(value)}</td>' if numeric else f"<td>{escape(value)}</td>"


def _table(head: Sequence[str], rows: Sequence[tuple[Sequence[str], str]], numeric: Sequence[bool]) -> str:
    """``rows``: (cells, css class of the row)."""
    th = "".join(f'<th class="num">{escape(h)}</th>' if n else f"<th>{escape(h)}</th>" for h, n in zip(head, numeric))
    body = "".join(f'<tr class="{cls}">' + "".join(_cell(c, n) for c, n in zip(cells, numeric)) + "</tr>"
                   for cells, cls in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _margin_values(items) -> list[Decimal]:
    """Margin % per item for the histogram (no revenue but some cost: below every edge)."""
    out = []
    for item in items:
        p = item.margin_pct
        if p is not None:
            out.append(p)
        elif item.cost > 0:
            out.append(Decimal("-1e9"))
    return out


def _tone(value: Decimal | None) -> str:
    return "" if value is None else ("bad" if value < 0 else "good")


def _when(t) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# ------------------------------------------------------------------------------------ margins

def margins_html(report, title: str | None = None) -> str:
    cur = report.currency
    title = title or f"Margins {report.label}"
    whales = report.whales()
    segments = report.usage_segments()
    plans = report.plans()
    parts = [f'<section class="kpis">{_margin_kpis(report, whales)}</section>',
             f'<section class="grid">{"".join(_margin_charts(report, segments, plans))}</section>',
             _segments_section(segments, cur), _whales_section(whales, cur), _plans_section(report, plans, cur)]
    if report.by:
        parts.append(_breakdown_section(report, cur))
    if report.kept:
        parts.append(_kept_section(report, cur))
    parts.append(_customers_section(report, cur))
    parts.append(_footer([
        ("Revenue", "the lines of invoices and credit notes finalized by the as-of instant whose service period "
                    "starts in the month (late-event adjustments count in the month they belong to); a period "
                    "not invoiced yet is rated to date by the plan (recurring fees in advance in full)."),
        ("Provider cost", "the cost stored with each event at ingestion, from the cost book in force at the event's "
                          "time."),
        ("Interactions", "events of type llm.call."),
        ("Usage segments", "the customers at the 25th, 50th, 90th and 99th percentile of interactions (nearest rank)."),
    ]))
    return _page(title, _margin_subtitle(report), "".join(parts))


def _margin_subtitle(report) -> str:
    sub = (f"Period {escape(report.label)} (calendar month in each customer's time zone) · as of "
           f"{escape(_when(report.as_of))} · {count(len(report.customers))} customers")
    if len(report.currencies) > 1:
        sub += f" · <b>several currencies ({escape(', '.join(report.currencies))}), added without conversion</b>"
    return sub


def _margin_kpis(report, whales: list) -> str:
    cur = report.currency
    return "".join([
        _kpi("Revenue", money(report.revenue, cur, "$"), "invoiced, or rated to date"),
        _kpi("Provider cost", money(report.cost, cur, "$"), "stored cost of the events"),
        _kpi("Gross margin", money(report.margin, cur, "$"), "revenue - provider cost", _tone(report.margin)),
        _kpi("Margin %", pct(report.margin_pct), "of revenue", _tone(report.margin_pct)),
        _kpi("Whales", count(len(whales)), "cost above revenue" + (
            f" or margin < {report.whale_margin_pct}%" if report.whale_margin_pct is not None else ""),
            "bad" if whales else "good"),
        _kpi("Unpriced usage", count(sum(g.events for g in report.unpriced_usage)),
             "events with no price yet (cost 0 above)", "bad" if report.unpriced_usage else "good"),
    ])


def _margin_charts(report, segments: list, plans: list) -> list[str]:
    charts = [
        _card(histogram_svg(histogram(_margin_values(report.customers), MARGIN_EDGES), "Customer margin distribution"),
              "Distribution of customer margins",
              "Customers per gross-margin band; red bands lose money (customers with cost and no revenue count "
              "in the lowest)."),
        _card(scatter_svg([(c.cost, c.revenue, c.customer) for c in report.customers], "Cost vs revenue per customer"),
              "Cost vs revenue per customer",
              "Each dot a customer. Below the dashed break-even line (revenue = cost) a customer costs more "
              "than it pays."),
        _card(bars_svg([(f"{s.name} (P{s.percentile})", [("revenue", s.customer.revenue), ("cost", s.customer.cost),
                                                          ("margin", s.customer.margin)]) for s in segments],
                       "Usage segments", kind="segments"),
              "Usage segments",
              "The P25 / P50 / P90 / P99 customer by interactions: its revenue, provider cost and margin."),
        _card(bars_svg([(plan, [("revenue", sum((c.revenue for c in cs), ZERO)),
                                ("cost", sum((c.cost for c in cs), ZERO)),
                                ("margin", sum((c.margin for c in cs), ZERO))]) for plan, cs in plans[:8]],
                       "Plans side by side", kind="plans"),
              "Plans side by side", "Revenue, provider cost and gross margin of each plan's customers."),
    ]
    if report.daily:
        charts.append(_card(bars_svg([(d.day.strftime("%d"), [("revenue", d.revenue), ("cost", d.cost)])
                                      for d in report.daily], "Daily revenue and cost", kind="daily"),
                            "Daily revenue and cost",
                            f"Each UTC day's provider cost and the revenue allocated to it (each customer's revenue "
                            f"split across the days of its events, by {report.allocate})."))
    if report.breakdown:
        rows = report.breakdown[:10]
        charts.append(_card(bars_svg([(r.key, [("revenue", r.revenue), ("cost", r.cost)]) for r in rows],
                                     f"By {report.by}", kind="breakdown"),
                            f"By {report.by}", f"Provider cost and allocated revenue per {report.by} "
                            f"(revenue split by {report.allocate})."))
    return charts


def _segments_section(segments: list, cur: str) -> str:
    return ("<h2>Usage segments</h2>"
            + '<ul class="sentences">' + "".join(f"<li>{escape(s.sentence())}</li>" for s in segments) + "</ul>"
            + _table(["Segment", "Customer", "Plan", "Interactions", "Provider cost", "Revenue", "Margin", "Margin %"],
                     [([f"{s.name} (P{s.percentile})", s.customer.customer, s.customer.plan or "",
                        count(s.customer.interactions), money(s.customer.cost, cur), money(s.customer.revenue, cur),
                        money(s.customer.margin, cur), pct(s.customer.margin_pct)],
                       "neg" if s.customer.margin < 0 else "") for s in segments],
                     [False, False, False, True, True, True, True, True]))


def _whales_section(whales: list, cur: str) -> str:
    heading = f"<h2>Whales ({len(whales)})</h2>"
    if not whales:
        return heading + '<p class="note">No whales: every customer\'s revenue covers its provider cost.</p>'
    return heading + _table(["Customer", "Plan", "Interactions", "Revenue", "Provider cost", "Margin", "Margin %"],
                            [([w.customer, w.plan or "", count(w.interactions), money(w.revenue, cur),
                               money(w.cost, cur), money(w.margin, cur), pct(w.margin_pct)], "neg") for w in whales],
                            [False, False, True, True, True, True, True])


def _plans_section(report, plans: list, cur: str) -> str:
    return "<h2>Plans</h2>" + _table(
        ["Plan", "Customers", "Revenue", "Provider cost", "Margin", "Margin %", "Whales"],
        [([plan, count(len(cs)), money(sum((c.revenue for c in cs), ZERO), cur), money(sum((c.cost for c in cs), ZERO), cur),
           money(sum((c.margin for c in cs), ZERO), cur),
           pct(margin_pct(sum((c.revenue for c in cs), ZERO), sum((c.cost for c in cs), ZERO))),
           count(sum(1 for c in cs if report.is_whale(c)))],
          "neg" if sum((c.margin for c in cs), ZERO) < 0 else "") for plan, cs in plans],
        [False, True, True, True, True, True, True])


def _breakdown_section(report, cur: str) -> str:
    rows = [([r.key, count(r.customers), count(r.events), money(r.cost, cur), money(r.revenue, cur),
              money(r.margin, cur), pct(r.margin_pct)], "neg" if r.margin < 0 else "") for r in report.breakdown]
    rows.append((["All", "", count(sum(r.events for r in report.breakdown)), money(report.cost, cur),
                  money(sum((r.revenue for r in report.breakdown), ZERO), cur), money(report.margin, cur),
                  pct(report.margin_pct)], "total"))
    return (f"<h2>By {escape(report.by)} (chargeback totals)</h2>" + _table(
        [report.by, "Customers", "Events", "Provider cost", "Revenue", "Margin", "Margin %"], rows,
        [False, True, True, True, True, True, True])
        + f'<p class="note">Each customer\'s revenue is split across the {escape(report.by)} values its '
        f"events carry, by {'event count' if report.allocate == 'events' else 'provider cost'}, in whole "
        "cents. (none): events without the property, and the revenue of customers with none.</p>")


def _kept_section(report, cur: str) -> str:
    return ("<h2>Unpriced and unmetered usage</h2>" + _table(
        ["Kept as", "Model / type", "Customers", "Events", "Tokens", "Provider cost"],
        [(["unpriced" if g.status == "unpriced" else "unmetered", g.key or "(no model)", count(g.customers),
           count(g.events), count(g.tokens), money(Decimal(g.cost_pico) / PICO, cur)],
          "neg" if g.status == "unpriced" else "") for g in report.kept],
        [False, False, True, True, True, True])
        + '<p class="note">Unpriced: events whose model had no price in the cost book; their cost counts 0 '
        "above until a price is added (billing costs add), which re-costs them. Unmetered: events of "
        "types no plan meters; their cost counts above, no revenue comes from them.</p>")


def _customers_section(report, cur: str) -> str:
    """The customer table (the lowest margins first when there are too many) with its totals."""
    rows = []
    shown = report.customers
    if len(shown) > MAX_CUSTOMER_ROWS:  # the lowest margins first; the CSV / JSON export has everyone
        shown = sorted(shown, key=lambda c: (c.margin, c.customer))[:MAX_CUSTOMER_ROWS]
    for c in shown:
        whale = report.is_whale(c)
        rows.append(([c.customer, c.plan or "", c.source, count(c.interactions), money(c.revenue, c.currency),
                      money(c.cost, c.currency), money(c.margin, c.currency), pct(c.margin_pct)],
                     ("neg whale" if whale else "")))
    rows.append((["All", "", "", count(sum(c.interactions for c in report.customers)), money(report.revenue, cur),
                  money(report.cost, cur), money(report.margin, cur), pct(report.margin_pct)], "total"))
    note = "Rows are rounded to the cent; totals are exact sums rounded once."
    if len(shown) < len(report.customers):
        note += (f" Showing the {len(shown):,} customers with the lowest margin of {len(report.customers):,} "
                 "(the totals are over all; --csv or ?format=csv lists every customer).")
    return "<h2>Customers</h2>" + _table(
        ["Customer", "Plan", "Revenue source", "Interactions", "Revenue", "Provider cost", "Margin", "Margin %"], rows,
        [False, False, False, True, True, True, True, True]) + f'<p class="note">{escape(note)}</p>'


def _footer(items: Sequence[tuple[str, str]]) -> str:
    return "<footer><dl>" + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items) + "</dl></footer>"


# --------------------------------------------------------------------------------- simulation

def simulation_html(sim, title: str = "Simulation") -> str:
    refs = [p.ref for p in sim.plans]
    cur = sim.plans[0].currency if sim.plans else "USD"
    sub = f"Period {escape(sim.period.label)} · {'ledger history' if sim.source == 'history' else 'synthetic population'}"
    levers = sim.levers.describe()
    sub += " · " + (escape("; ".join(levers)) if levers else "no what-if levers")
    actual = sim.actual_totals()
    rows = []
    if actual is not None:
        billed, cost = actual
        rows.append((["Actually billed", "", money(billed, cur), money(cost, cur), money(billed - cost, cur),
                      pct(margin_pct(billed, cost)), "", ""], "total"))
    for plan in sim.plans:
        t = sim.total(plan.ref)
        be = t.break_even_seat_price()
        cost = money(t.cost, plan.currency)
        if t.baseline_cost is not None and t.baseline_cost != t.cost:
            cost += f" (was {money(t.baseline_cost, plan.currency)})"
        rows.append(([f"{plan.ref} — {plan.name}", count(t.customers), money(t.revenue, plan.currency), cost,
                      money(t.margin, plan.currency), pct(t.margin_pct), _break_even(be, plan.currency),
                      count(len(sim.throttled(plan.ref)))], "neg" if t.margin < 0 else ""))
    parts = ["<h2>Plans side by side</h2>", _table(
        ["Plan", "Customers", "Revenue", "Provider cost", "Margin", "Margin %", "Break-even price / seat", "Throttled"],
        rows, [False, True, True, True, True, True, True, True])]
    parts.append('<p class="note">Break-even price per seat: the recurring price per seat that, replacing the plan\'s '
                 "recurring fees while usage charges stay as rated, makes revenue equal provider cost.</p>")

    comparison = [(p.ref, [("revenue", sim.total(p.ref).revenue), ("cost", sim.total(p.ref).cost),
                           ("margin", sim.total(p.ref).margin)]) for p in sim.plans]
    if actual is not None:
        comparison.insert(0, ("actually billed", [("revenue", actual[0]), ("cost", actual[1]),
                                                  ("margin", actual[0] - actual[1])]))
    segment_names = list(dict.fromkeys(name for ref in refs for name in sim.segments(ref)))
    by_segment = [(name, [(ref, sim.segments(ref)[name].margin) for ref in refs if name in sim.segments(ref)])
                  for name in segment_names]
    charts = [
        _card(bars_svg(comparison, "Plan comparison", kind="plans"), "Plans side by side",
              "Revenue, provider cost and gross margin per candidate plan" +
              (", next to what was actually billed." if actual is not None else ".")),
        _card(bars_svg(by_segment[:10], "Margin by segment", kind="segments"), "Margin by segment, plans side by side",
              "Gross margin of each segment under each plan; a bar below zero: the segment loses money."),
        _card(histogram_svg([(ref, sim.margin_distribution(ref)) for ref in refs], "Customer margin distribution"),
              "Distribution of customer margins", "Customers per gross-margin band under each plan."),
        _card(scatter_svg([(ref, [(r.cost, r.revenue, r.customer) for r in sim.results[ref]]) for ref in refs]
                          if len(refs) > 1 else [(r.cost, r.revenue, r.customer) for r in sim.results[refs[0]]],
                          "Cost vs revenue per customer"),
              "Cost vs revenue per customer",
              "Each dot a customer under a plan; below the dashed break-even line it costs more than it pays "
              "(red ring)."),
    ]
    parts.append(f'<section class="grid">{"".join(charts)}</section>')
    for plan in sim.plans:
        parts.append(_plan_section(sim, plan))
    return _page(title, sub, "".join(parts))


def _break_even(value: Decimal | None, currency: str) -> str:
    if value is None:
        return ""
    return "usage covers cost" if value <= 0 else money(value, currency)


def _plan_section(sim, plan) -> str:
    ref, c = plan.ref, plan.currency
    parts = [f"<h2>{escape(ref)} — {escape(plan.name)}</h2>"]
    segs = sim.segments(ref)
    parts.append(_table(["Segment", "Customers", "Revenue", "Provider cost", "Margin", "Margin %", "Revenue / customer",
                         "Break-even price / seat"],
                        [([name, count(a.customers), money(a.revenue, c), money(a.cost, c), money(a.margin, c),
                           pct(a.margin_pct), money(a.revenue / a.customers if a.customers else None, c),
                           _break_even(a.break_even_seat_price(), c)], "neg" if a.margin < 0 else "")
                         for name, a in segs.items()],
                        [False, True, True, True, True, True, True, True]))
    groups = sim.groups(ref, "actual_plan") if sim.has_actual else {}
    if len(groups) > 1:
        parts.append("<h3>By the plan customers are actually on</h3>" + _table(
            ["Actual plan", "Customers", "Billed", "Simulated revenue", "Provider cost", "Margin", "Margin %"],
            [([name, count(a.customers), money(a.actual, c), money(a.revenue, c), money(a.cost, c),
               money(a.margin, c), pct(a.margin_pct)], "neg" if a.margin < 0 else "") for name, a in groups.items()],
            [False, True, True, True, True, True, True]))
    movers = sim.movers(ref, 10)
    if movers and (sim.has_actual or plan is not sim.plans[0]):
        reference = "Billed" if sim.has_actual else f"Under {sim.plans[0].ref}"
        parts.append("<h3>Customers whose bill moves most</h3>" + _table(
            ["Customer", "Segment", reference, "Simulated", "Change"],
            [([r.customer, r.segment, money(refbill, c), money(r.revenue, c), money(d, c)], "")
             for r, refbill, d in movers], [False, False, True, True, True]))
    throttled = sim.throttled(ref)
    if throttled:
        parts.append(f"<h3>Would have been throttled ({len(throttled)})</h3>" + _table(
            ["Customer", "Segment", "Charge", "Policy", "Used", "Included", "Beyond"],
            [([r.customer, r.segment, t.charge, t.policy, count(t.units), count(t.included), count(t.beyond)], "")
             for r in throttled[:25] for t in r.throttled], [False, False, False, False, True, True, True]))
    return "".join(parts)


__all__ = ["PLAN_COLOURS", "bars_svg", "histogram_svg", "margins_html", "scatter_svg", "simulation_html"]
