"""`billing advise`: the price (or included units, or overage rate) that reaches a target
margin for a segment, and every segment's break-even (``billing.simulate.advise``).

Wired with ``app.command("advise")(advise)`` in ``billing/cli/__init__.py``.
"""

from __future__ import annotations

import os
import tempfile
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from billing.cli.render import console, print_json


def _fail(message: str) -> None:
    from billing.cli.context import fail

    fail(message)


def _decimal(text: str, option: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite():
        _fail(f"{option}: not a number: {text!r}")
    return value


def advise(
    plan: Annotated[Path, typer.Option(help="The plan file to advise on (its lever is solved).")],
    target_margin: Annotated[str, typer.Option(help="Target gross margin in percent, e.g. 70 (below 100).")],
    population: Annotated[Path | None, typer.Option(help="Population spec (YAML), e.g. examples/population.yaml.")] = None,
    history: Annotated[str | None, typer.Option(help="Use this past month (YYYY-MM) of the ledger "
                                                "(BILLING_DATABASE_URL).")] = None,
    segment: Annotated[str, typer.Option(help="Whose margin: P0-P100 (the customer at that percentile of "
                                         "provider cost, nearest rank), all, or a named segment.")] = "P90",
    solve: Annotated[str | None, typer.Option(help="The lever: fee:<key> | unit_price:<charge> | "
                                              "overage:<charge> | included:<charge>; default: the plan's "
                                              "first fee.")] = None,
    step: Annotated[str | None, typer.Option(help="Grid of the answer (default: the currency's minor unit; "
                                             "1 unit for included:), e.g. 0.0001 for a sub-cent unit price.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed of the population (default: the spec's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    html: Annotated[Path | None, typer.Option(help="Also write a self-contained HTML report.")] = None,
) -> None:
    """Solve a plan's price lever for a target margin at a segment; break-even per segment."""
    from billing.catalog import PlanInvalid, load_plan_file
    from billing.cli.context import fail_with
    from billing.errors import BillingError
    from billing.simulate.advise import AdviceError, advise as run_advice, check_target, percentile_rank
    from billing.simulate.price_lever import LeverError, default_lever, parse_lever

    if (population is None) == (history is None):
        _fail("give exactly one of --population SPEC.yaml or --history YYYY-MM")
    target = _decimal(target_margin, "--target-margin")
    step_value = _decimal(step, "--step") if step is not None else None
    if step_value is not None and step_value <= 0:
        _fail(f"--step: must be above 0, not {step}")
    try:
        check_target(target)
        percentile_rank(segment)
        candidate = load_plan_file(plan)
        lever = parse_lever(solve, candidate) if solve is not None else default_lever(candidate)
    except PlanInvalid as exc:
        _fail(f"--plan {plan}: invalid plan\n" + "\n".join(str(p) for p in exc.problems))
    except AdviceError as exc:
        _fail(str(exc))
    except LeverError as exc:
        _fail(f"--solve: {exc}")
    except BillingError as exc:
        fail_with(exc, f"--plan {plan}: ")
    try:
        period, totals = _population(population, candidate, seed) if population else _history(history, candidate)
        advice = run_advice(candidate, totals, period, lever, target, segment, step_value,
                            "synthetic" if population else "history")
    except AdviceError as exc:
        _fail(str(exc))
    except BillingError as exc:
        fail_with(exc, f"{'--population' if population else '--history'}: ")

    if html is not None:
        from billing.reports.advice_html import advice_html

        _write_atomically(html, advice_html(advice))
    if as_json:
        print_json(advice.to_json())
        return
    print_advice(advice)
    if html is not None:
        console.print(f"HTML report written to {html}", highlight=False)


def _population(path: Path, plan, seed: int | None):
    from billing.cli.context import cost_book
    from billing.simulate.advise import population_totals
    from billing.simulate.spec import load_spec

    spec = load_spec(path)
    return population_totals(spec, plan, spec.book(None if spec.prices is not None else cost_book()), seed)


def _history(month: str, plan):
    from sqlalchemy.exc import SQLAlchemyError

    from billing.cli.context import report_engine
    from billing.simulate.history import history_totals

    try:
        period, totals = history_totals(report_engine(), month, [plan])
        if not totals:  # (said as the month's, not as "the population has no customers")
            _fail(f"--history {month}: the ledger has no customer with a subscription or usage in that month: "
                  "nothing to advise on (another month, or --population SPEC.yaml)")
        return period, totals
    except ValueError as exc:
        _fail(f"--history: {exc}")
    except SQLAlchemyError as exc:
        _fail(f"cannot read the ledger (BILLING_DATABASE_URL; run `billing db upgrade`?): "
              f"{type(exc).__name__}: {str(exc).splitlines()[0]}")


def _write_atomically(path: Path, text: str) -> None:
    """The whole report or nothing: written beside the target, then renamed over it."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if str(path.parent) else ".")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        _fail(f"--html {path}: cannot write: {exc.strerror or exc}")


# ------------------------------------------------------------------------------ output

def print_advice(advice) -> None:
    from billing.reports.advice_html import describe_solution, lever_value, margin_text, segment_label, solution_cell

    c, chosen = advice.currency, advice.chosen
    what = "synthetic population" if advice.source == "synthetic" else "ledger history"
    console.print(f"[bold]Pricing advice[/bold] for {advice.plan.ref} — {advice.plan.name}, {what}, "
                  f"period {advice.period.label}", highlight=False)
    console.print(f"  lever {advice.lever} (now {lever_value(advice, advice.current_value)}), target margin "
                  f"{advice.target}% at {segment_label(chosen)}", highlight=False)
    for line in describe_solution(advice, chosen, chosen.target):
        console.print(f"  {line}", highlight=False)
    if advice.population_suggested is not None:
        console.print(f"  every customer under it: margin {margin_text(advice.population_suggested.margin_pct)} "
                      f"(now {margin_text(advice.population_current.margin_pct)})", highlight=False)
    table = Table(title="By segment", title_justify="left", caption_justify="left",
                  caption="Margins are rounded down to 0.01%. Break-even: the lever value where revenue equals "
                          "provider cost. P<p>: the customer at that percentile of provider cost (nearest rank).")
    for i, name in enumerate(("Segment", "Customers", "Provider cost", "Margin now",
                              f"{advice.lever} for {advice.target}%", "Margin at it", "Break-even")):
        table.add_column(name, justify="left" if i == 0 else "right")
    for s in advice.segments:
        at = s.target.at_value
        table.add_row(segment_label(s), f"{len(s.customers):,}", _money(s.cost, c),
                      margin_text(s.current.margin_pct), solution_cell(advice, s.target),
                      margin_text(at.margin_pct) if at else "", solution_cell(advice, s.break_even))
    console.print(table)


def _money(value: Decimal, currency: str) -> str:
    from billing.reports.render import money

    return money(value, currency)
