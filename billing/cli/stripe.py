"""`billing stripe ...`: push invoices to Stripe, reconcile.

The Stripe key and API base come only from settings (``BILLING_STRIPE_API_KEY``,
``BILLING_STRIPE_API_BASE``); they are never printed.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from billing.cli.render import console, err_console, print_json

app = typer.Typer(help="Stripe: push invoices, reconcile with Stripe.", no_args_is_help=True)


def _sync(need_client: bool = True):
    from billing.cli.context import engine, fail_with
    from billing.errors import BillingError
    from billing.stripe_sync.client import make_client
    from billing.stripe_sync.sync import StripeSync

    try:
        client = make_client() if need_client else None
    except BillingError as exc:
        fail_with(exc)
    return StripeSync(engine(), client)  # type: ignore[arg-type]


def _guard(fn):
    """Stripe or domain failures outside a single invoice: a clean message, exit code 2."""
    import stripe

    from billing.cli.context import fail, fail_with
    from billing.errors import BillingError
    from billing.stripe_sync.client import describe

    try:
        return fn()
    except stripe.StripeError as exc:
        fail(describe(exc), error="external_service_error")
    except BillingError as exc:
        fail_with(exc)


@app.command("sync")
def sync_cmd(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be pushed; call nothing.")] = False,
    invoice: Annotated[list[int] | None, typer.Option("--invoice", help="Only these invoice ids.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable result.")] = False,
) -> None:
    """Push finalized invoices to Stripe and propagate voids (idempotent; completes partial pushes).

    Exit code 1 if any invoice failed: re-run to retry."""
    import sys

    from billing.cli.context import checked
    from billing.ledger.accounts import check_row_id

    for invoice_id in invoice or ():
        checked(check_row_id, invoice_id, "--invoice")
    svc = _sync(need_client=not dry_run)
    only = invoice or None
    if sys.stderr.isatty() and not as_json and not dry_run:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("pushing to Stripe"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err_console, transient=True) as bar:
            task = bar.add_task("sync", total=svc.pending(only))
            result = _guard(lambda: svc.push(only=only, progress=lambda _: bar.advance(task)))
    else:
        result = _guard(lambda: svc.push(dry_run=dry_run, only=only))
    if as_json:
        print_json(result.to_json())
    else:
        table = Table(title="Stripe sync" + (" (dry run)" if dry_run else ""), title_justify="left")
        for col in ("Invoice", "Number", "Action", "Stripe invoice", "Reason"):
            table.add_column(col)
        for o in result.outcomes:
            style = "red" if o.action == "failed" else ""
            table.add_row(str(o.invoice_id), o.number or "", f"[{style}]{o.action}[/{style}]" if style else o.action,
                          o.stripe_invoice_id or "", o.reason)
        if result.outcomes:
            console.print(table)
        else:
            console.print("Nothing to push.")
    if not result.ok:
        err_console.print(f"[red]{len(result.by_action('failed'))} invoice(s) failed[/red]; re-run to retry.")
        raise typer.Exit(1)


@app.command("reconcile")
def reconcile_cmd(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable result.")] = False) -> None:
    """List every difference between our invoices and Stripe's. Exit code 1 if any."""
    diffs = _guard(lambda: _sync().reconcile())
    if as_json:
        print_json({"ok": not diffs, "differences": [d.to_json() for d in diffs]})
    elif not diffs:
        console.print("No differences.")
    else:
        table = Table(title=f"{len(diffs)} difference(s)", title_justify="left")
        for col in ("Kind", "Invoice", "Number", "Stripe invoice", "Ours", "Stripe", "Message"):
            table.add_column(col)
        for d in diffs:
            table.add_row(d.kind, "" if d.invoice_id is None else str(d.invoice_id), d.number or "",
                          d.stripe_invoice_id or "", "" if d.ours is None else str(d.ours),
                          "" if d.stripe is None else str(d.stripe), d.message)
        console.print(table)
    if diffs:
        raise typer.Exit(1)
