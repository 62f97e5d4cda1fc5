"""`billing report ...`: margins and forecasts over the ledger (BILLING_DATABASE_URL).

Wire with ``app.add_typer(report.app, name="report")`` in ``billing/cli/__init__.py``.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from billing.cli.render import console, print_json
from billing.reports.render import count, money, pct

app = typer.Typer(help="Margin reports and forecasts over the ledger.", no_args_is_help=True)


def _db_fail(exc: Exception) -> None:
    from billing.cli.context import fail

    fail(f"cannot read the ledger (BILLING_DATABASE_URL; run `billing db upgrade`?): "
         f"{type(exc).__name__}: {str(exc).splitlines()[0]}")


def _now_label() -> str:
    now = datetime.now(UTC)
    return f"{now.year:04d}-{now.month:02d}"


def _red(text: str, on: bool) -> str:
    return f"[red]{text}[/red]" if on else text


def _table(*columns: str, title: str, caption: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 or name in ("Plan", "Source", "Customer", "Flags") or name.startswith("Usage")
                         else "right")
    return table


@app.command("margins")
def margins(
    period: Annotated[str | None, typer.Option(help="Month YYYY-MM (default: the current month).")] = None,
    by: Annotated[list[str] | None, typer.Option(help="Break down by an event property: feature, model, user, task, "
                                                 "or any other property (chargeback totals); twice for a two-way "
                                                 "breakdown (--by team --by model).")] = None,
    allocate: Annotated[str, typer.Option(help="Allocate each customer's revenue across --by values by share of "
                                          "'events' or of 'cost'.")] = "events",
    whale_margin: Annotated[str | None, typer.Option(help="Also count as whales customers whose margin % is below "
                                                     "this (default: only cost > revenue).")] = None,
    as_of: Annotated[str | None, typer.Option(help="Report as of this instant (ISO; default now): invoices "
                                              "finalized by then, open periods rated up to it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV output.")] = False,
    html: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report with charts to FILE.")] = None,
    daily: Annotated[bool, typer.Option("--daily", help="With the daily series (UTC days): events, cost, allocated "
                                        "revenue, tokens (always in --html).")] = False,
) -> None:
    """Revenue, provider cost and gross margin per customer; breakdowns, whales, segments."""
    from billing.cli.context import catalog, fail, instant, report_engine, run
    from billing.reports.margins import margin_report

    label = period or _now_label()
    threshold = None
    if whale_margin is not None:
        try:
            threshold = Decimal(whale_margin)
        except InvalidOperation:
            fail(f"--whale-margin: not a number: {whale_margin!r}")
        if not threshold.is_finite():
            fail(f"--whale-margin: not a number: {whale_margin!r}")
    if allocate not in ("events", "cost"):
        fail("--allocate must be 'events' or 'cost'")
    if as_json and as_csv:
        fail("give at most one of --json and --csv")
    at = instant(as_of, "--as-of")
    try:
        report = run(lambda: margin_report(report_engine(), catalog(), label, as_of=at, by=tuple(by) if by else None,
                                           allocate=allocate, daily=daily or html is not None,
                                           whale_margin_pct=threshold))
    except ValueError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        _db_fail(exc)
    if html is not None:
        from billing.reports.html import margins_html

        try:
            html.write_text(margins_html(report), encoding="utf-8")
        except OSError as exc:
            fail(f"--html: cannot write {html}: {exc.strerror}")
    if as_json:
        print_json(report.to_json(), fast=True)
        return
    if as_csv:
        sys.stdout.write(report.to_csv())
        return
    print_margins(report)
    if html is not None:
        console.print(f"HTML report written to {html}", highlight=False)


def print_margins(report) -> None:
    cur = report.currency
    console.print(f"[bold]Margins {report.label}[/bold] as of {report.as_of.isoformat(timespec='seconds')}: "
                  f"{len(report.customers)} customers, revenue {money(report.revenue, cur)}, provider cost "
                  f"{money(report.cost, cur)}, gross margin {money(report.margin, cur)} ({pct(report.margin_pct)})",
                  highlight=False)
    if len(report.currencies) > 1:
        console.print(f"[yellow]warning[/yellow]: several currencies ({', '.join(report.currencies)}): "
                      "totals add them without conversion", highlight=False)
    console.print(_customers_table(report))
    if report.by:
        console.print(_breakdown_table(report))
    console.print(_segments_table(report))
    plans = report.plans()
    if len(plans) > 1:
        console.print(_plans_table(report, plans))
    whales = report.whales()
    if whales:
        wt = _table("Customer", "Plan", "Revenue", "Provider cost", "Margin", "Margin %", "Interactions",
                    title=f"Whales ({len(whales)})")
        for w in whales:
            wt.add_row(w.customer, w.plan or "", money(w.revenue, w.currency), money(w.cost, w.currency),
                       _red(money(w.margin, w.currency), w.margin < 0), pct(w.margin_pct), count(w.interactions))
        console.print(wt)
    else:
        console.print("No whales: every customer's revenue covers its provider cost.", highlight=False)


def _customers_table(report) -> Table:
    cur = report.currency
    table = _table("Customer", "Plan", "Revenue", "Source", "Provider cost", "Margin", "Margin %", "Interactions",
                   title="Per customer",
                   caption="Rows are rounded to the cent; totals are exact sums rounded once. "
                           "Red: a whale (cost above revenue" + (
                               f", or margin below {report.whale_margin_pct}%" if report.whale_margin_pct is not None
                               else "") + ").")
    for c in report.customers:
        whale = report.is_whale(c)
        table.add_row(_red(c.customer, whale), c.plan or "", money(c.revenue, c.currency), c.source,
                      money(c.cost, c.currency), _red(money(c.margin, c.currency), c.margin < 0),
                      _red(pct(c.margin_pct), whale), count(c.interactions))
    table.add_section()
    table.add_row("[bold]All[/bold]", "", money(report.revenue, cur), "", money(report.cost, cur),
                  money(report.margin, cur), pct(report.margin_pct), count(sum(c.interactions for c in report.customers)))
    return table


def _breakdown_table(report) -> Table:
    cur = report.currency
    bt = _table(report.by, "Customers", "Events", "Provider cost", f"Revenue (by {report.allocate})", "Margin",
                "Margin %", title=f"By {report.by} (chargeback totals)",
                caption=f"Each customer's revenue is split across the {report.by} values its events carry, "
                        f"by {'event count' if report.allocate == 'events' else 'provider cost'}, in whole cents. "
                        "(none): events without the property, and revenue of customers with none.")
    for r in report.breakdown:
        bt.add_row(r.key, count(r.customers), count(r.events), money(r.cost, cur), money(r.revenue, cur),
                   _red(money(r.margin, cur), r.margin < 0), pct(r.margin_pct))
    bt.add_section()
    bt.add_row("[bold]All[/bold]", "", count(sum(r.events for r in report.breakdown)), money(report.cost, cur),
               money(sum((r.revenue for r in report.breakdown), Decimal(0)), cur), money(report.margin, cur),
               pct(report.margin_pct))
    return bt


def _segments_table(report) -> Table:
    seg = _table("Segment", "Customer", "Interactions", "Provider cost", "Revenue", "Margin", "Margin %",
                 title="Usage segments: the P25 / P50 / P90 / P99 customer by interactions")
    for s in report.usage_segments():
        c = s.customer
        seg.add_row(f"{s.name} (P{s.percentile})", c.customer, count(c.interactions), money(c.cost, c.currency),
                    money(c.revenue, c.currency), _red(money(c.margin, c.currency), c.margin < 0),
                    _red(pct(c.margin_pct, 0), c.margin < 0))
    return seg


def _plans_table(report, plans: list) -> Table:
    from billing.reports.stats import margin_pct

    cur = report.currency
    pt = _table("Plan", "Customers", "Revenue", "Provider cost", "Margin", "Margin %", "Whales", title="By plan")
    for plan, cs in plans:
        rev = sum((c.revenue for c in cs), Decimal(0))
        cost = sum((c.cost for c in cs), Decimal(0))
        pt.add_row(plan, count(len(cs)), money(rev, cur), money(cost, cur), _red(money(rev - cost, cur), rev < cost),
                   pct(margin_pct(rev, cost)), count(sum(1 for c in cs if report.is_whale(c))))
    return pt


@app.command("forecast")
def forecast_cmd(
    as_of: Annotated[str | None, typer.Option(help="Project from this instant (ISO; default now).")] = None,
    flagged: Annotated[bool, typer.Option("--flagged", help="Only customers whose projection crosses a limit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Projected end-of-period usage, cost and invoice per customer from the run rate."""
    from billing.cli.context import catalog, instant, report_engine, run
    from billing.reports.forecast import METHOD, forecast

    at = instant(as_of, "--as-of")
    try:
        rows = run(lambda: forecast(report_engine(), catalog(), at))
    except SQLAlchemyError as exc:
        _db_fail(exc)
    if flagged:
        rows = [r for r in rows if r.flags]
    if as_json:
        print_json({"as_of": at.isoformat().replace("+00:00", "Z"), "method": METHOD,
                    "customers": [r.to_json() for r in rows]}, fast=True)
        return
    elapsed = {(r.elapsed * 100).quantize(Decimal("0.1")) for r in rows}
    same = len(elapsed) == 1
    title = f"Forecast to period end, as of {at.isoformat(timespec='seconds')}"
    if same:
        title += f" ({next(iter(elapsed))}% of the period elapsed)"
    columns = ["Customer", "Plan"] + ([] if same else ["Elapsed"]) + [
        "Usage: so far → projected", "Invoice: to date → projected", "Cost: to date → projected", "Proj. margin",
        "Flags"]
    table = _table(*columns, title=title,
                   caption=f"Method: {METHOD}. Flags: limits the projection reaches (~ when, at the run rate).")
    for r in rows:
        usage = "\n".join(f"{k} {count(v.to_integral_value())} → {count(r.projected_usage[k].to_integral_value())}"
                          for k, v in r.usage_to_date.items())
        flags = "\n".join(x.subject + ("" if x.reached_now or x.at is None else f" ~{x.at.strftime('%b %d')}")
                          for x in r.crossings if x.threshold == 100)
        cells = [r.customer, r.plan] + ([] if same else [f"{(r.elapsed * 100).quantize(Decimal('0.1'))}%"]) + [
            usage, f"{money(r.invoice_to_date, r.currency)} → {money(r.projected_invoice, r.currency)}",
            f"{money(r.cost_to_date, r.currency)} → {money(r.projected_cost, r.currency)}",
            _red(pct(r.projected_margin_pct), r.projected_margin < 0), _red(flags, bool(flags))]
        table.add_row(*cells)
    console.print(table)
