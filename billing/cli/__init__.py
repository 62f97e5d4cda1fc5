"""The `billing` command."""

from __future__ import annotations

import typer

from billing.cli import invoice, plans
from billing.cli.demo import demo

app = typer.Typer(help="Pricing & billing engine for AI products.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
app.add_typer(plans.app, name="plans")
app.add_typer(invoice.app, name="invoice")
app.command("demo")(demo)
