"""`billing invoice ...`: preview (no database); the ledger adds close/show/list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from billing.catalog import PlanInvalid, load_plan_file
from billing.costs import CostBook
from billing.errors import BillingError
from billing.cli.render import console, err_console, invoice_table, print_json
from billing.preview import InputError, parse_instant, preview, read_events
from billing.rating.periods import Period, parse_period_label

app = typer.Typer(help="Invoices: preview, close, show, list.", no_args_is_help=True)


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[red]error[/red]: {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command("preview")
def preview_cmd(
    plan: Annotated[Path, typer.Option("--plan", help="Plan file (YAML).")],
    events: Annotated[Path, typer.Option("--events", help="Events, one JSON object per line.")],
    customer: Annotated[str | None, typer.Option(help="Only this customer.")] = None,
    period: Annotated[str | None, typer.Option(help="Calendar period YYYY-MM (or YYYY).")] = None,
    start: Annotated[str | None, typer.Option(help="Period start, ISO 8601 with timezone.")] = None,
    end: Annotated[str | None, typer.Option(help="Period end (exclusive), ISO 8601.")] = None,
    seats: Annotated[int, typer.Option(min=0, help="Seats held for the whole period.")] = 1,
    timezone: Annotated[str, typer.Option(help="Customer timezone for period boundaries.")] = "UTC",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per customer (a list if several).")] = False,
) -> None:
    """Rate a JSONL file of events under a plan file, with no database."""
    try:
        plan_spec = load_plan_file(plan)
    except PlanInvalid as exc:
        fail("invalid plan\n" + "\n".join(str(p) for p in exc.problems))
    try:
        chosen: Period | None = None
        if period and (start or end):
            raise InputError("use either --period or --start/--end, not both")
        if period:
            try:
                chosen = parse_period_label(period, timezone)
            except ValueError as exc:
                raise InputError(f"--period: {exc}") from None
        elif start or end:
            if not (start and end):
                raise InputError("--start and --end go together")
            s, e = parse_instant(start), parse_instant(end)
            if e <= s:
                raise InputError("--end must be after --start")
            chosen = Period(s, e)
        costed = read_events(events, CostBook.load_default())
        invoices = preview(plan_spec, costed, period=chosen, timezone=timezone, customer=customer, seats=seats)
    except BillingError as exc:
        fail(exc.message)
    if as_json:
        docs = [inv.to_json() for inv in invoices]
        print_json(docs[0] if len(docs) == 1 else docs)
    else:
        for inv in invoices:
            console.print(invoice_table(inv))
