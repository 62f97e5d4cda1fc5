"""Pricing advice (``billing advise``) as text lines and a self-contained HTML page (the
building blocks of ``html.py``: inline CSS and SVG, no JavaScript). The terminal table
(``billing/cli/advise.py``) and the page share the sentences below."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal
from html import escape

from billing.money import dec_str, minor_units
from billing.reports.charts import bars_svg
from billing.reports.html import _card, _kpi, _page, _table, _tone
from billing.reports.render import money


def lever_value(advice, value: Decimal | None) -> str:
    """A lever value as written: money with at least the minor unit's places, units as a count."""
    if value is None:
        return ""
    if not advice.lever.is_money:
        return f"{value.normalize():,f} units" if value == value.to_integral_value() else f"{dec_str(value)} units"
    places = max(minor_units(advice.currency), -min(0, value.normalize().as_tuple().exponent))
    return f"{value:,.{places}f} {advice.currency}"


def margin_text(value: Decimal | None) -> str:
    """Margin % rounded *down* to 0.01 (a shown margin never exceeds the real one)."""
    return "n/a" if value is None else f"{value.quantize(Decimal('0.01'), ROUND_FLOOR):,}%"


def segment_label(seg) -> str:
    if len(seg.customers) == 1 and seg.name[:1] in "Pp":
        c = seg.customers[0]
        return f"{seg.name} ({c.customer})"
    return seg.name


def describe_solution(advice, seg, solution) -> list[str]:
    """What the solve found for one segment, in sentences."""
    lever, c, step = advice.lever, advice.currency, advice.step
    needed = money(solution.needed_revenue, c)
    if solution.status == "unreachable":
        if lever.increasing:
            return [f"no value of {lever} reaches {solution.target}% for {seg.name}: revenue stops at "
                    f"{money(solution.limit.revenue, c)} {c} (a spend cap, or no usage the lever prices), "
                    f"below the {needed} {c} needed for a provider cost of {money(seg.cost, c)} {c}"]
        return [f"even with 0 included units, {seg.name} reaches only {margin_text(solution.limit.margin_pct)} "
                f"(needs {solution.target}%): no amount of {lever} reaches it; solve a fee or a price instead"]
    if solution.status == "unbounded":
        return [f"every amount of {lever} reaches {solution.target}% for {seg.name} (the fees cover its cost)"]
    at = solution.at_value
    lines = [f"set {lever} to {lever_value(advice, solution.value)}: {seg.name} margin "
             f"{margin_text(at.margin_pct)} (re-rated: revenue {money(at.revenue, c)}, provider cost "
             f"{money(at.cost, c)} {c})"]
    less = solution.one_step_less
    if less is not None:
        what = (f"{lever_value(advice, solution.value - step)} (one step, {dec_str(step)}, less)" if lever.increasing
                else f"{lever_value(advice, solution.value + step)} (one step, {dec_str(step)}, more)")
        lines.append(f"at {what}: {margin_text(less.margin_pct)}, short of {solution.target}%")
    elif lever.increasing:
        lines.append(f"the target is reached even at 0: the usage charges alone bring {money(at.revenue, c)} {c}")
    return lines


def advice_html(advice) -> str:
    c, chosen = advice.currency, advice.chosen
    title = f"Pricing advice — {advice.plan.ref}"
    sub = (f"{escape(advice.plan.name)} · period {escape(advice.period.label)} · "
           f"{'ledger history' if advice.source == 'history' else 'synthetic population'} · lever "
           f"{escape(str(advice.lever))} · target {escape(dec_str(advice.target))}% at {escape(segment_label(chosen))}")
    sol = chosen.target
    kpis = [_kpi(f"{advice.lever} now", lever_value(advice, advice.current_value),
                 f"margin {margin_text(chosen.current.margin_pct)} at {chosen.name}", _tone(chosen.current.margin_pct)),
            _kpi("Suggested", lever_value(advice, sol.value) if sol.value is not None else sol.status,
                 f"margin {margin_text(sol.at_value.margin_pct)}" if sol.at_value else "", "good" if sol.value is not None
                 else "bad"),
            _kpi("Break-even", lever_value(advice, chosen.break_even.value) if chosen.break_even.value is not None
                 else chosen.break_even.status, f"{chosen.name}: margin 0")]
    if advice.population_suggested is not None:
        kpis.append(_kpi("Every customer", margin_text(advice.population_suggested.margin_pct),
                         f"now {margin_text(advice.population_current.margin_pct)}",
                         _tone(advice.population_suggested.margin_pct)))
    sentences = "".join(f"<li>{escape(line)}</li>" for line in describe_solution(advice, chosen, sol))
    rows = []
    for s in advice.segments:
        at = s.target.at_value
        rows.append(([segment_label(s), f"{len(s.customers):,}", money(s.cost, c), margin_text(s.current.margin_pct),
                      solution_cell(advice, s.target), margin_text(at.margin_pct) if at else "", solution_cell(advice, s.break_even)],
                     "neg" if s.current.margin_pct is not None and s.current.margin_pct < 0 else ""))
    table = _table(["Segment", "Customers", "Provider cost", "Margin now", f"{advice.lever} for {advice.target}%",
                    "Margin at it", "Break-even"], rows, [False, True, True, True, True, True, True])
    chart_groups = [(s.name, [("now", _m(s.current.margin_pct)), ("suggested", _m(_margin_under(advice, s)))])
                    for s in advice.segments if len(s.customers) > 1][:10]
    chart = _card(bars_svg(chart_groups, "Margin % by segment", kind="segments", currency="", unit="%"),
                  "Margin % by segment", "Each named segment's margin under the plan as written and with the "
                  "suggested value.") if advice.suggested_plan is not None and chart_groups else ""
    body = (f'<div class="kpis">{"".join(kpis)}</div><ul class="sentences">{sentences}</ul>'
            f"<h2>By segment</h2>{table}"
            '<p class="note">Margins are rounded down to 0.01%. Break-even: the lever value where revenue equals '
            f"provider cost. P&lt;p&gt;: {escape(_method())}. Answers are multiples of {escape(dec_str(advice.step))}, "
            "rounded up for a price and down for included units, and re-rated.</p>"
            f'<div class="grid">{chart}</div>')
    return _page(title, sub, body)


def _method() -> str:
    from billing.simulate.advise import PERCENTILE_METHOD

    return PERCENTILE_METHOD


def _margin_under(advice, seg) -> Decimal | None:
    from billing.simulate.advise import rate_group

    return rate_group(advice.plan, seg.customers, advice.period, advice.lever, advice.chosen.target.value).margin_pct


def _m(value: Decimal | None) -> Decimal:
    return value if value is not None else Decimal(0)


def solution_cell(advice, solution) -> str:
    if solution.status == "reached":
        return lever_value(advice, solution.value)
    return "any amount" if solution.status == "unbounded" else "unreachable"
