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

app = typer.Typer(help="Margin reports and forecasts over the ledger.", no_args_is_help=True)


def _db_fail(exc: Exception) -> None:
    from billing.cli.context import fail

    fail(f"cannot read the ledger (BILLING_DATABASE_URL; run `billing db upgrade`?): "
         f"{type(exc).__name__}: {str(exc).splitlines()[0]}")


def _now_label() -> str:
    now = datetime.now(UTC)
    return f"{now.year:04d}-{now.month:02d}"


def _pct(value) -> str:
    from billing.reports.stats import round_pct

    return "n/a" if value is None else f"{round_pct(value)}%"


def _money(value: Decimal) -> str:
    from billing.money import round_line

    return str(round_line(value, "USD"))


@app.command("margins")
def margins(
    period: Annotated[str | None, typer.Option(help="Month YYYY-MM (default: the current month).")] = None,
    by: Annotated[str | None, typer.Option(help="Break down by an event property: feature, model, user, task, "
                                           "or any other property (chargeback totals).")] = None,
    allocate: Annotated[str, typer.Option(help="Allocate each customer's revenue across --by values by share of "
                                          "'events' or of 'cost'.")] = "events",
    whale_margin: Annotated[str | None, typer.Option(help="Also list customers whose margin %% is below this.")] = None,
    as_of: Annotated[str | None, typer.Option(help="Rate open periods up to this instant (ISO; default now).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV output.")] = False,
    html: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report with charts to FILE.")] = None,
) -> None:
    """Revenue, provider cost and gross margin per customer; breakdowns, whales, segments."""
    from billing.cli.context import catalog, engine, fail, instant, run
    from billing.reports.margins import margin_report

    label = period or _now_label()
    threshold = None
    if whale_margin is not None:
        try:
            threshold = Decimal(whale_margin)
        except InvalidOperation:
            fail(f"--whale-margin: not a number: {whale_margin!r}")
    if allocate not in ("events", "cost"):
        fail("--allocate must be 'events' or 'cost'")
    at = instant(as_of, "--as-of")
    try:
        report = run(lambda: margin_report(engine(), catalog(), label, as_of=at, by=by, allocate=allocate,
                                           whale_margin_pct=threshold))
    except ValueError as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        _db_fail(exc)
    if html is not None:
        from billing.reports.html import margins_html

        html.write_text(margins_html(report), encoding="utf-8")
    if as_json:
        print_json(report.to_json())
        return
    if as_csv:
        sys.stdout.write(report.to_csv())
        return
    table = Table("Customer", "Plan", "Revenue", "Source", "Provider cost", "Margin", "Margin %", "Interactions",
                  title=f"Margins {label}", title_justify="left")
    for c in report.customers:
        style = "red" if c.margin < 0 else ""
        table.add_row(c.customer, c.plan or "", str(c.revenue), c.source, _money(c.cost),
                      f"[{style}]{_money(c.margin)}[/{style}]" if style else _money(c.margin), _pct(c.margin_pct),
                      str(c.interactions))
    table.add_section()
    table.add_row("[bold]All[/bold]", "", _money(report.revenue), "", _money(report.cost), _money(report.margin),
                  _pct(report.margin_pct), "")
    console.print(table)
    if report.breakdown:
        bt = Table(by, "Customers", "Events", "Provider cost", f"Revenue (by {allocate})", "Margin", "Margin %",
                   title=f"By {by} (chargeback totals)", title_justify="left")
        for r in report.breakdown:
            bt.add_row(r.key, str(r.customers), str(r.events), _money(r.cost), _money(r.revenue), _money(r.margin),
                       _pct(r.margin_pct))
        console.print(bt)
    seg = Table("Metric", "P25", "P50", "P90", "P99", title="Usage segments (across customers)", title_justify="left")
    for metric, ps in report.segments().items():
        seg.add_row(metric, *("" if v is None else (str(int(v)) if metric == "interactions" else _money(v))
                              for v in ps.values()))
    console.print(seg)
    whales = report.whales()
    if whales:
        console.print(f"[bold]Whales[/bold] ({len(whales)}): " + ", ".join(
            f"{w.customer} (cost {_money(w.cost)} vs revenue {w.revenue})" for w in whales[:10]), highlight=False)
    if html is not None:
        console.print(f"HTML report written to {html}", highlight=False)


@app.command("forecast")
def forecast_cmd(
    as_of: Annotated[str | None, typer.Option(help="Project from this instant (ISO; default now).")] = None,
    flagged: Annotated[bool, typer.Option("--flagged", help="Only customers with a flag.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Projected end-of-period usage, cost and invoice per customer from the run rate."""
    from billing.cli.context import catalog, engine, instant, run
    from billing.reports.forecast import forecast

    at = instant(as_of, "--as-of")
    try:
        rows = run(lambda: forecast(engine(), catalog(), at))
    except SQLAlchemyError as exc:
        _db_fail(exc)
    if flagged:
        rows = [r for r in rows if r.flags]
    if as_json:
        print_json([r.to_json() for r in rows])
        return
    table = Table("Customer", "Plan", "Elapsed", "Invoice to date", "Projected invoice", "Cost to date",
                  "Projected cost", "Flags", title=f"Forecast as of {at.isoformat()}", title_justify="left")
    for r in rows:
        table.add_row(r.customer, r.plan, f"{(r.elapsed * 100).quantize(Decimal('0.1'))}%", str(r.invoice_to_date),
                      str(r.projected_invoice), _money(r.cost_to_date), _money(r.projected_cost),
                      ", ".join(r.flags))
    console.print(table)
