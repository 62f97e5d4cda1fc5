"""`billing invoice ...`: preview (no database); the ledger adds close/show/list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from billing.catalog import PlanInvalid, load_plan_file
from billing.cli.costs import load_book
from billing.errors import BillingError
from billing.cli.render import console, invoice_table, print_json
from billing.preview import InputError, parse_instant, preview, preview_schedules, read_events
from billing.preview_schedule import needs_schedule
from billing.rating.periods import BillingCycle, Period, local_dates, parse_period_label

app = typer.Typer(help="Invoices: preview, close, show, list.", no_args_is_help=True)


from billing.cli.context import fail  # noqa: E402


@app.command("preview")
def preview_cmd(
    plan: Annotated[Path, typer.Option("--plan", help="Plan file (YAML).")],
    events: Annotated[Path, typer.Option("--events", help="Events, one JSON object per line.")],
    customer: Annotated[str | None, typer.Option(help="Only this customer.")] = None,
    period: Annotated[str | None, typer.Option(help="Calendar period YYYY-MM (or YYYY).")] = None,
    start: Annotated[str | None, typer.Option(help="Period start, ISO 8601 with timezone.")] = None,
    end: Annotated[str | None, typer.Option(help="Period end (exclusive), ISO 8601.")] = None,
    seats: Annotated[int, typer.Option(min=0, help="Seats held from the period's start.")] = 1,
    seats_at: Annotated[list[str] | None, typer.Option(
        "--seats-at", help="A seat change: ISO=N (N seats from that instant on); repeat for several. Seat "
                           "events in the events file ({\"type\": \"subscription.seats\", \"properties\": "
                           "{\"seats\": N}}) change one customer's seats.")] = None,
    timezone: Annotated[str, typer.Option(help="Customer timezone for period boundaries.")] = "UTC",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per customer (a list if several).")] = False,
    costs: Annotated[list[Path] | None, typer.Option("--costs", help="Extra cost data file(s) (e.g. from "
                                                                    "`billing costs import-litellm`).")] = None,
) -> None:
    """Rate a JSONL file of events under a plan file, with no database.

    The period is --period (a calendar month, or year for a yearly plan), or --start/--end,
    or else the calendar period of the plan's interval holding the first event, in
    --timezone. Every customer in the file gets an invoice (one JSON object, or a list when
    there are several). A plan that bills advance fees at the period's start or cuts
    threshold invoices shows every invoice the customer receives in and at the end of the
    period (JSON: {"customer", "invoices": [{"issued_at", "when", ...}]} per customer).
    Bad input exits with code 2 naming the file line or plan path."""
    try:
        plan_spec = load_plan_file(plan)
    except PlanInvalid as exc:
        fail("invalid plan\n" + "\n".join(str(p) for p in exc.problems))
    try:
        try:
            BillingCycle(timezone=timezone)
        except ValueError as exc:
            raise InputError(f"--timezone: {exc}") from None
        _check_preview_options(seats, start, end)
        chosen: Period | None = None
        if period and (start or end):
            raise InputError("use either --period or --start/--end, not both")
        if period:
            try:
                chosen = parse_period_label(period, timezone)
            except ValueError as exc:
                raise InputError(f"--period: {exc}") from None
            wanted = "YYYY-MM" if plan_spec.billing.interval == "month" else "YYYY"
            if (len(period.strip()) == 4) != (wanted == "YYYY"):
                raise InputError(f"--period: plan {plan_spec.ref} bills every {plan_spec.billing.interval}: "
                                 f"give the period as {wanted}, or pass --start/--end")
        elif start or end:
            if not (start and end):
                raise InputError("--start and --end go together")
            s, e = parse_instant(start), parse_instant(end)
            if e <= s:
                raise InputError("--end must be after --start")
            chosen = Period(s, e)
        changes = [_seat_change(text) for text in seats_at or ()]
        costed = read_events(events, load_book(costs), plan_spec)
        if needs_schedule(plan_spec):
            schedules = preview_schedules(plan_spec, costed, period=chosen, timezone=timezone, customer=customer,
                                          seats=seats, seat_changes=changes, next_period=not (start or end))
            _print_schedules(schedules, as_json)
            return
        invoices = preview(plan_spec, costed, period=chosen, timezone=timezone, customer=customer, seats=seats,
                           seat_changes=changes)
    except BillingError as exc:
        fail(exc.message, error=str(exc.code), param=exc.param, details=exc.details)
    if as_json:
        docs = [inv.to_json() for inv in invoices]
        print_json(docs[0] if len(docs) == 1 else docs)
    else:
        for inv in invoices:
            console.print(invoice_table(inv, timezone=timezone))


def _seat_change(text: str):
    """``--seats-at ISO=N``: N seats from that instant on."""
    from billing.ledger.accounts import check_seats

    instant, sep, count = text.rpartition("=")
    if not sep or not count.strip().isdigit():
        raise InputError(f"--seats-at: expected ISO=N (e.g. 2026-10-16T00:00:00Z=8), got {text!r}")
    from billing.events import instant_problem

    try:
        seats = check_seats(int(count))
        at = parse_instant(instant)
    except BillingError as exc:
        raise InputError(f"--seats-at: {exc.message}") from None
    problem = instant_problem(at)
    if problem:
        raise InputError(f"--seats-at: {instant!r} {problem}")
    return at, seats


def _print_schedules(schedules, as_json: bool) -> None:
    if as_json:
        docs = [{"customer": name, "invoices": [s.to_json() for s in scheduled]} for name, scheduled in schedules]
        print_json(docs[0] if len(docs) == 1 else docs)
        return
    for name, scheduled in schedules:
        for s in scheduled:
            title = (f"{name} — {s.when} invoice, issued {s.issued_at.isoformat().replace('+00:00', 'Z')} — "
                     f"{s.invoice.plan} v{s.invoice.plan_version}")
            console.print(invoice_table(s.invoice, title))


def _check_preview_options(seats: int, start: str | None, end: str | None) -> None:
    """The seat and instant rules of the ledger's commands (``billing.ledger.accounts``)."""
    from billing.events import instant_problem
    from billing.ledger.accounts import check_seats

    try:
        check_seats(seats)
    except BillingError as exc:
        raise InputError(f"--seats: {exc.message}") from None
    for name, text in (("--start", start), ("--end", end)):
        problem = instant_problem(parse_instant(text)) if text else None
        if problem:
            raise InputError(f"{name}: {text!r} {problem}")


def _timezones(customers) -> dict[str, str]:
    """customer -> time zone (UTC for one not found): invoices show their dates in it."""
    from collections import defaultdict

    from sqlmodel import Session

    from billing.cli.context import engine
    from billing.store.repository import known_customers

    with Session(engine()) as session:
        return defaultdict(lambda: "UTC", known_customers(session, customers))


def _invoicing():
    from billing.cli.context import catalog, engine
    from billing.config import get_settings
    from billing.invoicing.service import Invoicing

    return Invoicing(engine(), catalog(), future_tolerance_seconds=get_settings().future_tolerance_seconds)


@app.command("close")
def close_cmd(
    as_of: Annotated[str, typer.Option("--as-of", help="Close every period that ended by this instant (ISO).")],
    allow_future: Annotated[bool, typer.Option(
        "--allow-future", help="Allow an --as-of after the clock: finalizes periods that have not ended yet.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Finalize every subscription period that ended by --as-of (idempotent; closes run one
    at a time). An --as-of after the clock (past BILLING_FUTURE_TOLERANCE_SECONDS) exits 2
    unless --allow-future is given."""
    from billing.cli.context import instant, run

    when = instant(as_of, "--as-of")
    result = run(lambda: _invoicing().close(when, allow_future=allow_future))
    if as_json:
        print_json(result.to_json())
    else:
        console.print(f"finalized {len(result.invoices)} invoice(s), {len(result.credit_notes)} credit note(s); "
                      f"{result.adjusted_periods} closed period(s) adjusted for late events", highlight=False)


@app.command("show")
def show_cmd(invoice_id: int, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """One invoice or credit note with its lines."""
    from rich.table import Table

    from billing.cli.context import checked, run
    from billing.invoicing.service import invoice_json
    from billing.ledger.accounts import check_row_id

    checked(check_row_id, invoice_id, "invoice id")
    header, lines = run(lambda: _invoicing().get(invoice_id))
    doc = invoice_json(header, lines)
    if as_json:
        print_json(doc)
        return
    dates = local_dates(header.period_start, header.period_end, _timezones([header.customer_id])[header.customer_id])
    title = (f"{doc['number'] or 'draft'} ({doc['kind']}, {doc['status']}) — {doc['customer']} — "
             f"{doc['plan']['id']} v{doc['plan']['version']} — {dates}")
    table = Table("Description", "Quantity", "Unit price", f"Amount ({doc['currency']})", title=title,
                  title_justify="left")
    for ln in doc["lines"]:
        table.add_row(ln["description"], ln["quantity"], ln["unit_price"] or "", ln["amount"])
    table.add_section()
    table.add_row("[bold]Total[/bold]", "", "", f"[bold]{doc['total']}[/bold]")
    console.print(table)


def _transition(invoice_id: int, at: str | None, as_json: bool, change: str) -> None:
    from billing.cli.context import checked, instant, run
    from billing.invoicing.service import invoice_json
    from billing.ledger.accounts import check_row_id

    checked(check_row_id, invoice_id, "invoice id")
    invoicing = _invoicing()
    when = instant(at, "--at")
    run(lambda: getattr(invoicing, change)(invoice_id, when))
    doc = invoice_json(*invoicing.get(invoice_id))
    if as_json:
        print_json(doc)
    else:
        console.print(f"{doc['number'] or doc['id']}: {doc['status']}", highlight=False)


@app.command("pay")
def pay_cmd(invoice_id: int, at: Annotated[str | None, typer.Option("--at", help="When it was paid (ISO); default now.")] = None,
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """finalized or uncollectible -> paid (idempotent; a void invoice or a credit note cannot
    be paid: exit 2, invalid_transition)."""
    _transition(invoice_id, at, as_json, "mark_paid")


@app.command("void")
def void_cmd(invoice_id: int, at: Annotated[str | None, typer.Option("--at", help="When it was voided (ISO); default now.")] = None,
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """finalized or uncollectible -> void: the invoice (or credit note) is not owed (its lines
    stay as they were; idempotent; a paid invoice cannot be voided)."""
    _transition(invoice_id, at, as_json, "void")


@app.command("uncollectible")
def uncollectible_cmd(invoice_id: int,
                      at: Annotated[str | None, typer.Option("--at", help="When (ISO); default now.")] = None,
                      as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """finalized -> uncollectible: written off, yet still payable or voidable later
    (idempotent; invoices only)."""
    _transition(invoice_id, at, as_json, "mark_uncollectible")


@app.command("list")
def list_cmd(customer: Annotated[str | None, typer.Option()] = None,
             status: Annotated[str | None, typer.Option()] = None,
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Invoices and credit notes, oldest first."""
    from rich.table import Table

    from billing.cli.context import checked
    from billing.money import from_minor
    from billing.ledger.accounts import check_invoice_status

    if status is not None:
        checked(check_invoice_status, status)
    rows = _invoicing().list(customer, status)
    docs = [{"id": r.id, "number": r.number, "kind": r.kind, "status": r.status, "customer": r.customer_id,
             "period_start": r.period_start.isoformat(), "period_end": r.period_end.isoformat(),
             "total": f"{from_minor(r.total_minor, r.currency):f}", "currency": r.currency} for r in rows]
    if as_json:
        print_json(docs)
        return
    table = Table("Id", "Number", "Kind", "Status", "Customer", "Period (customer's time zone)", "Total")
    zones = _timezones(r.customer_id for r in rows)
    for r, d in zip(rows, docs):
        table.add_row(str(d["id"]), d["number"] or "", d["kind"], d["status"], d["customer"],
                      local_dates(r.period_start, r.period_end, zones[r.customer_id]), f"{d['total']} {d['currency']}")
    console.print(table)
