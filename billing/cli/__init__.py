"""The `billing` command."""

from __future__ import annotations

import typer

from billing.cli import budgets as budgets_cli
from billing.cli import client as client_cli
from billing.cli import contracts, costs, events_unpriced, invoice, keys, ledger_cmds, plans  # noqa: F401 (events_unpriced: a command)
from billing.cli import events_archive  # noqa: F401,E402 (commands)
from billing.cli import report as report_cli
from billing.cli import stripe as stripe_cli
from billing.cli import webhooks as webhooks_cli
from billing.cli.serve import serve
from billing.cli.simulate import simulate
from billing.cli.advise import advise
from billing.cli.demo import demo
from billing.cli.worker import worker
from billing.cli.ingest_worker import ingest_worker

app = typer.Typer(help="Pricing & billing engine for AI products.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
app.add_typer(plans.app, name="plans")
app.add_typer(invoice.app, name="invoice")
app.add_typer(costs.app, name="costs")
app.add_typer(ledger_cmds.db_app, name="db")
app.add_typer(ledger_cmds.customers_app, name="customers")
app.add_typer(ledger_cmds.subs_app, name="subscriptions")
app.add_typer(ledger_cmds.credits_app, name="credits")
app.add_typer(contracts.app, name="contracts")
app.add_typer(budgets_cli.app, name="budgets")
app.add_typer(ledger_cmds.events_app, name="events")
app.add_typer(stripe_cli.app, name="stripe")
app.add_typer(report_cli.app, name="report")
app.command("simulate")(simulate)
app.command("advise")(advise)
app.add_typer(keys.app, name="keys")
app.add_typer(webhooks_cli.app, name="webhooks")
app.add_typer(client_cli.app, name="client")
app.command("serve")(serve)
app.command("demo")(demo)
app.command("worker")(worker)
app.command("ingest-worker")(ingest_worker)
