"""`billing demo`: rate a synthetic month under the example plans and print the invoices."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from billing.catalog import Catalog
from billing.cli.render import console, invoice_table
from billing.costs import CostBook, event_cost
from billing.events import parse_event
from billing.money import round_line
from billing.preview import preview
from billing.rating.periods import calendar_month
from billing.simulate.synthetic import SEGMENTS, customer_events


def demo(
    plans_dir: Annotated[Path, typer.Option("--plans", help="Plan directory.")] = Path("plans"),
    seed: Annotated[int, typer.Option(help="Random seed of the synthetic usage.")] = 7,
) -> None:
    """Rate a synthetic October 2026 (light/medium/heavy/power users) under every example plan."""
    catalog = Catalog.from_paths(plans_dir)
    book = CostBook.load_default()
    period = calendar_month(2026, 10)
    costed = []
    for name, segment in SEGMENTS.items():
        for data in customer_events(f"{name}-user", segment, period.start, period.end, seed):
            event = parse_event(data)
            costed.append((event, event_cost(event, book)))
    at = datetime(2026, 10, 1, tzinfo=UTC)
    for plan_id in catalog.plan_ids():
        plan = catalog.resolve(plan_id, at)
        invoices = preview(plan, costed, period=period, seats=3)
        medium = next(i for i in invoices if i.customer.startswith("medium"))
        console.print(invoice_table(medium))  # the medium user in full
        summary = Table(title=f"{plan.name}: every segment", title_justify="left")
        for col in ("Customer", "Invoice", "Provider cost", "Gross margin", "Margin %"):
            summary.add_column(col, justify="left" if col == "Customer" else "right")
        for inv in sorted(invoices, key=lambda i: i.total):
            cost = round_line(inv.provider_cost, inv.currency)
            margin = inv.total - cost
            pct = f"{(margin / inv.total * 100).quantize(Decimal('0.1'))}%" if inv.total else "n/a"
            summary.add_row(inv.customer, str(inv.total), str(cost), str(margin), pct)
        console.print(summary)
        console.print()
