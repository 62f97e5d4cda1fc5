"""`billing events unpriced`: the events kept though they could not be priced or metered."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from billing.cli.context import engine, fail
from billing.cli.ledger_cmds import events_app
from billing.cli.render import console, print_json


@events_app.command("unpriced")
def events_unpriced(
    customer: Annotated[str | None, typer.Option(help="Only this customer's events.")] = None,
    status: Annotated[str | None, typer.Option(help="unpriced (no price for the model yet) or unmetered (no plan "
                                                    "meters the type); default both.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="How many events to list (oldest first).")] = 100,
    after: Annotated[int, typer.Option(min=0, help="List after this position (a previous page's next_after).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Events stored unpriced (their model has no price yet: cost 0 until `billing costs add`)
    or unmetered (no plan meters their type), with the reason; totals by model and type."""
    from sqlalchemy.exc import SQLAlchemyError

    from billing.store.flagged import STATUSES, listing

    if status is not None and status not in STATUSES:
        fail(f"--status must be one of {', '.join(STATUSES)}")
    try:
        out = listing(engine(), customer=customer, status=status, after=after, limit=limit)
    except SQLAlchemyError as exc:
        fail(f"cannot read the ledger (BILLING_DATABASE_URL; run `billing db upgrade`?): "
             f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    if as_json:
        print_json(out)
        return
    if not out["events"]:
        console.print("no unpriced or unmetered events" + (f" for {escape(customer)}" if customer else ""),
                      highlight=False)
        return
    totals = Table("Status", "Model / type", "Customers", "Events", "Tokens", "Cost", title="Totals",
                   title_justify="left")
    for g in out["totals"]:
        totals.add_row(g["status"], escape(str(g.get("model", g.get("type")))), str(g["customers"]),
                       f"{g['events']:,}", g["tokens"], g["cost"])
    console.print(totals)
    events = Table("Customer", "Event", "Type", "Time", "Model", "Tokens", "Why", title="Events (oldest first)",
                   title_justify="left")
    for e in out["events"]:
        why = "; ".join(r for r in (e["unpriced"], e["unmetered"]) if r)
        events.add_row(escape(e["customer"]), escape(e["id"]), escape(e["type"]), e["timestamp"],
                       escape(e["model"] or ""), e["tokens"], escape(why))
    console.print(events)
    if out["next_after"] is not None:
        console.print(f"more: --after {out['next_after']}", highlight=False)
