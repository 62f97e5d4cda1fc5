"""`billing budgets ...`: a customer's budgets, for the customer or one property value of its
events (``billing.budgets.service``; the rule: ``billing.quota.budgets``)."""

from __future__ import annotations

from typing import Annotated

import typer

from billing.cli.context import catalog, engine, run
from billing.cli.render import console, print_json

app = typer.Typer(help="Budgets at every scope: billed amount, provider cost or units over a window.",
                  no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _budgets():
    from billing.budgets.service import Budgets

    return Budgets(engine(), catalog())


@app.command("create")
def create(customer: str, name: str,
           measure: Annotated[str, typer.Option("--measure", help="billed | cost | units")],
           amount: Annotated[str, typer.Option("--amount", help="The limit (money or units).")],
           window: Annotated[str, typer.Option("--window", help="daily | weekly | monthly | period")] = "period",
           scope: Annotated[str | None, typer.Option("--scope", help="PROPERTY=VALUE (team=research, tag=beta); "
                                                                     "default: the whole customer")] = None,
           hard: Annotated[bool, typer.Option("--hard", help="Enforce: deny (or --downgrade-to MODEL).")] = False,
           downgrade_to: Annotated[str | None, typer.Option("--downgrade-to", help="A hard budget's cheaper model.")]
           = None,
           meter: Annotated[str | None, typer.Option("--meter", help="units: the meter counted.")] = None,
           timezone: Annotated[str | None, typer.Option("--timezone", help="The window's timezone "
                                                                           "(default: the customer's).")] = None,
           as_json: JsonOpt = False) -> None:
    """Create a budget: `billing budgets create acme research-cost --measure cost --amount 50
    --window daily --scope team=research --hard`."""
    data = {"name": name, "measure": measure, "amount": amount, "window": window, "scope": scope,
            "enforcement": "hard" if hard or downgrade_to else "soft",
            "policy": "downgrade" if downgrade_to else None, "model": downgrade_to, "meter": meter,
            "timezone": timezone}
    budget, warnings = run(lambda: _budgets().create(customer, {k: v for k, v in data.items() if v is not None}))
    if as_json:
        print_json({"customer": customer, **budget.to_json(), **({"warnings": warnings} if warnings else {})})
        return
    console.print(f"budget {budget.id} ({budget.name}) created for {customer}", highlight=False)
    for w in warnings:
        console.print(f"warning: {w['message']}", highlight=False)


@app.command("list")
def list_(customer: str, as_json: JsonOpt = False) -> None:
    """The customer's budgets."""
    budgets = run(lambda: _budgets().list(customer))
    if as_json:
        print_json({"customer": customer, "budgets": [b.to_json() for b in budgets]})
        return
    for b in budgets:
        scope = "customer" if b.customer_wide else f"{b.scope_property}={b.scope_value}"
        console.print(f"{b.id}  {b.name}  {scope}  {b.measure}{'(' + b.meter + ')' if b.meter else ''} "
                      f"<= {b.to_json()['amount']} per {b.window}  {b.enforcement}/{b.policy}"
                      f"{' ' + b.model if b.model else ''}", highlight=False)


@app.command("delete")
def delete(customer: str, budget_id: int, as_json: JsonOpt = False) -> None:
    """Delete one of the customer's budgets."""
    run(lambda: _budgets().delete(customer, budget_id))
    print_json({"customer": customer, "id": budget_id, "deleted": True}) if as_json else \
        console.print(f"budget {budget_id} deleted", highlight=False)
