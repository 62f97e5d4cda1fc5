"""`billing demo`: the whole loop on a fresh SQLite ledger.

Customers across light / medium / heavy / power segments subscribe to the example plans,
a synthetic October 2026 of events from several models is ingested, the period is closed,
and the invoices and each customer's revenue, provider cost and gross margin are printed.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from billing.catalog import Catalog, PlanInvalid
from billing.cli.context import fail
from billing.money import round_line
from billing.cli.render import console
from billing.rating.periods import calendar_month
from billing.simulate.synthetic import Population, population_events

PLAN_BY_SEGMENT = {
    "light": ["support-chatbot", "copilot-premium", "cursor-pro", "support-resolutions", "team"],
    "medium": ["support-chatbot", "team", "cursor-pro", "token-api"],
    "heavy": ["team", "support-chatbot"],
    "power": ["cursor-pro"],
}


def example_plans() -> Path:
    """The example plans shipped with the package (``billing/example_plans``: the project's
    ``plans/``), so the demo runs from any directory."""
    return Path(__file__).resolve().parents[1] / "example_plans"


NEXT_STEPS = (
    ("the margins by feature, with the whales", "billing report margins --period 2026-10 --by feature"),
    ("one invoice, line by line", "billing invoice show 1"),
    ("October re-rated under a candidate plan", "billing simulate --history 2026-10 --plan {plans}/token-api.yaml"),
)


def demo(
    plans_dir: Annotated[Path | None, typer.Option(
        "--plans", help="Plan directory (default: ./plans if there is one, else the examples shipped with billing).",
        show_default=False)] = None,
    db: Annotated[Path, typer.Option(help="SQLite file to (re)create for the demo.")] = Path("billing-demo.db"),
    seed: Annotated[int, typer.Option(help="Random seed of the synthetic usage.")] = 7,
    show: Annotated[int, typer.Option(help="How many invoices to print in full.")] = 3,
) -> None:
    """Run the whole loop on a fresh SQLite ledger: customers, a month of events, close, invoices, margins."""
    from billing.invoicing.service import Invoicing, invoice_json

    if plans_dir is None:
        plans_dir = Path("plans") if Path("plans").is_dir() else example_plans()
    try:
        catalog = Catalog.from_paths(plans_dir)
    except PlanInvalid as exc:
        fail(f"cannot load the plans in {plans_dir!s} (pass --plans DIR)\n"
             + "\n".join(str(p) for p in exc.problems))
    engine = _fresh_ledger(db)
    period = calendar_month(2026, 10)
    now = period.end + timedelta(hours=1)
    population = Population({"light": 5, "medium": 4, "heavy": 2, "power": 1})
    _subscribe(engine, catalog, population, period)
    _ingest(engine, catalog, list(population_events(population, period.start, period.end, seed)), now, db)

    invoicing = Invoicing(engine, catalog, clock=lambda: now)
    closed = invoicing.close(period.end)
    console.print(f"closed {period.label or '2026-10'}: {len(closed.invoices)} invoices finalized\n", highlight=False)
    docs = [invoice_json(*invoicing.get(i)) for i in closed.invoices]
    _print_invoices(docs, show)
    _print_margins(docs)
    _print_next_steps(db, plans_dir)


def _print_next_steps(db: Path, plans_dir: Path) -> None:
    """Three commands to try next, on the demo's ledger."""
    import shlex

    plans = "" if plans_dir == Path("plans") else f" BILLING_PLANS_DIR={shlex.quote(str(plans_dir))}"
    console.print(f"\nNext, on this ledger: export BILLING_DATABASE_URL=sqlite:///{db}{plans}", highlight=False,
                  soft_wrap=True)
    for what, command in NEXT_STEPS:
        console.print(f"  {command.format(plans=shlex.quote(str(plans_dir)))}    # {what}", highlight=False,
                      soft_wrap=True)


def _fresh_ledger(db: Path):
    """A new, migrated SQLite ledger at ``db`` (an old one and its WAL files removed)."""
    from billing.store.db import make_engine, upgrade

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    upgrade(url)
    return make_engine(url)


def _subscribe(engine, catalog: Catalog, population: Population, period) -> None:
    """Each customer of the population on a plan of its segment; launch credits for one."""
    from billing.ledger.accounts import Accounts

    accounts = Accounts(engine, catalog)
    for customer, segment in population.customers():
        options = PLAN_BY_SEGMENT[segment.name]
        index = int(customer.rsplit("-", 1)[1]) - 1
        accounts.create_customer(customer, name=f"{segment.name.title()} user", now=period.start)
        accounts.subscribe(customer, options[index % len(options)], at=period.start,
                           seats=3 if segment.name != "light" else 1)
    accounts.grant_credits("medium-002", Decimal("25.00"), at=period.start, name="Launch credits",
                           grant_id="launch-medium-002")


def _ingest(engine, catalog: Catalog, events: list, now, db: Path) -> None:
    from billing.ledger.ingest import Ledger

    ledger = Ledger(engine, catalog, clock=lambda: now)
    with Progress(TextColumn("ingesting events"), BarColumn(), MofNCompleteColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("ingest", total=len(events))
        result = ledger.record(events, chunk_size=2000, progress=lambda n: bar.advance(task, n))
    console.print(f"ledger: {result.accepted} events accepted into {db}", highlight=False)


def _print_invoices(docs: list[dict], show: int) -> None:
    """The ``show`` largest invoices in full."""
    for doc in sorted(docs, key=lambda d: d["total"], reverse=True)[:show]:
        table = Table("Description", "Quantity", "Unit price", "Amount (USD)", title_justify="left",
                      title=f"{doc['number']} — {doc['customer']} — {doc['plan']['id']} — October 2026")
        for ln in doc["lines"]:
            table.add_row(ln["description"], ln["quantity"], ln["unit_price"] or "", ln["amount"])
        table.add_section()
        table.add_row("[bold]Total[/bold]", "", "", f"[bold]{doc['total']}[/bold]")
        console.print(table)


def _print_margins(docs: list[dict]) -> None:
    summary = Table("Customer", "Plan", "Invoice", "Revenue", "Provider cost", "Gross margin", "Margin %",
                    title="Revenue, provider cost and gross margin per customer (October 2026)",
                    title_justify="left")
    # exact provider costs are summed, then each figure shown is rounded once (round_line)
    totals = [Decimal(0), Decimal(0)]
    for doc in sorted(docs, key=lambda d: d["customer"]):
        revenue = Decimal(doc["total"])
        cost = Decimal(doc["provider_cost"])
        margin = revenue - cost
        pct = f"{(margin / revenue * 100).quantize(Decimal('0.1'))}%" if revenue else "n/a"
        shown = str(round_line(margin, "USD"))
        summary.add_row(doc["customer"], doc["plan"]["id"], doc["number"], str(revenue),
                        str(round_line(cost, "USD")), f"[red]{shown}[/red]" if margin < 0 else shown, pct)
        totals[0] += revenue
        totals[1] += cost
    summary.add_section()
    margin = totals[0] - totals[1]
    summary.add_row("[bold]All[/bold]", "", "", str(totals[0]), str(round_line(totals[1], "USD")),
                    str(round_line(margin, "USD")),
                    f"{(margin / totals[0] * 100).quantize(Decimal('0.1'))}%" if totals[0] else "n/a")
    console.print(summary)
