"""`billing simulate`: re-rate a synthetic population or a past period under candidate plans.

Wire with ``app.command("simulate")(simulate)`` in ``billing/cli/__init__.py``.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from billing.cli.render import console, print_json

PlanOpt = Annotated[list[Path] | None, typer.Option("--plan", help="Candidate plan file (repeatable); "
                                                    "default: the spec's `plans`.")]


def _dec(text: str | None, name: str) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        _fail(f"{name}: not a number: {text!r}")


def _fail(message: str) -> None:
    from billing.cli.context import fail

    fail(message)


def simulate(
    plan: PlanOpt = None,
    population: Annotated[Path | None, typer.Option(help="Population spec (YAML), e.g. examples/population.yaml.")] = None,
    history: Annotated[str | None, typer.Option(help="Re-rate this past month (YYYY-MM) from the ledger "
                                                "(BILLING_DATABASE_URL) and compare with what was billed.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: the spec's).")] = None,
    cost_scale: Annotated[str | None, typer.Option(help="Lever: multiply every provider price by this.")] = None,
    cost_date: Annotated[str | None, typer.Option(help="Lever: cost events at this date's prices (YYYY-MM-DD).")] = None,
    route: Annotated[str | None, typer.Option(help="Lever: route shares of calls, e.g. gpt-5-mini=0.7,claude-sonnet-4-5=0.2.")] = None,
    route_from: Annotated[str | None, typer.Option(help="Lever: only route calls of these models (comma-separated).")] = None,
    cache_hit: Annotated[str | None, typer.Option(help="Lever: prompt-cache hit rate (share of input tokens read from cache).")] = None,
    batch_share: Annotated[str | None, typer.Option(help="Lever: share of calls sent through the batch API.")] = None,
    max_output: Annotated[int | None, typer.Option(help="Lever: cap output tokens per call.")] = None,
    semantic_cache: Annotated[str | None, typer.Option(help="Lever: share of calls served from a semantic cache.")] = None,
    semantic_cache_cost: Annotated[str | None, typer.Option(help="Lever: provider cost of one semantic-cache hit "
                                                            "(default 0).")] = None,
    enforce_quota: Annotated[bool, typer.Option(help="Replay each plan's quota decision: calls past a fast quota on "
                                                "the slow lane's model, denied calls removed.")] = False,
    top: Annotated[int, typer.Option(help="How many movers to list.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    html: Annotated[Path | None, typer.Option(help="Also write a self-contained HTML report with charts.")] = None,
) -> None:
    """Rate usage under candidate plans: revenue, provider cost and margin per plan and segment."""
    from billing.catalog import PlanInvalid
    from billing.cli.context import fail_with
    from billing.errors import BillingError
    from billing.simulate.spec import load_spec

    if (population is None) == (history is None):
        _fail("give exactly one of --population SPEC.yaml or --history YYYY-MM")
    try:
        spec = load_spec(population) if population else None
        plans = _candidate_plans(plan, spec, population)
        levers = _levers(spec, cost_scale=cost_scale, cost_date=cost_date, route=route, route_from=route_from,
                         cache_hit=cache_hit, batch_share=batch_share, max_output=max_output,
                         semantic_cache=semantic_cache, semantic_cache_cost=semantic_cache_cost,
                         enforce_quota=enforce_quota)
        sim = _synthetic(plans, spec, seed, levers) if spec is not None else _history(plans, history, levers)
    except PlanInvalid as exc:
        _fail("invalid plan\n" + "\n".join(str(p) for p in exc.problems))
    except BillingError as exc:
        fail_with(exc)

    if html is not None:
        from billing.reports.html import simulation_html

        html.write_text(simulation_html(sim, title=f"Simulation — {spec.name if spec else 'history ' + history}"),
                        encoding="utf-8")
    if as_json:
        print_json(sim.to_json(top=top), fast=True)
        return
    print_simulation(sim, top)
    if html is not None:
        console.print(f"HTML report written to {html}", highlight=False)


def _candidate_plans(plan_files: list[Path] | None, spec, population: Path | None) -> list:
    """The plans given (``--plan``), else the spec's; each plan version once."""
    from billing.catalog import load_plan_file
    from billing.simulate.spec import spec_plans

    plans = [load_plan_file(p) for p in plan_files or []]
    if not plans and spec is not None:
        plans = spec_plans(spec, population)
    if not plans:
        _fail("no plans: pass --plan PLAN.yaml (repeatable)")
    refs = [p.ref for p in plans]
    if len(set(refs)) != len(refs):
        _fail(f"the same plan version was given twice: {', '.join(refs)}")
    return plans


def _levers(spec, *, cost_scale: str | None, cost_date: str | None, route: str | None, route_from: str | None,
            cache_hit: str | None, batch_share: str | None, max_output: int | None,
            semantic_cache: str | None = None, semantic_cache_cost: str | None = None, enforce_quota: bool = False):
    """The spec's levers (or none), with the options given on the command line applied."""
    from billing.simulate.levers import Levers, parse_route

    levers = spec.levers if spec else Levers()
    updates: dict = {}
    if cost_scale is not None:
        updates["cost_scale"] = _dec(cost_scale, "--cost-scale")
    if cost_date is not None:
        try:
            updates["cost_date"] = date.fromisoformat(cost_date)
        except ValueError:
            _fail(f"--cost-date: not a date (YYYY-MM-DD): {cost_date!r}")
    if route is not None:
        try:
            updates["route"] = parse_route(route, route_from)
        except ValueError as exc:
            _fail(f"--route: {exc}")
    if cache_hit is not None:
        updates["cache_hit_rate"] = _dec(cache_hit, "--cache-hit")
    if batch_share is not None:
        updates["batch_share"] = _dec(batch_share, "--batch-share")
    if max_output is not None:
        updates["max_output_tokens"] = max_output
    if semantic_cache is not None or semantic_cache_cost is not None:
        if semantic_cache is None:
            _fail("--semantic-cache-cost needs --semantic-cache SHARE")
        updates["semantic_cache"] = {"share": _dec(semantic_cache, "--semantic-cache"),
                                     "cost_per_hit": _dec(semantic_cache_cost, "--semantic-cache-cost") or Decimal(0)}
    if enforce_quota:
        updates["enforce_quota"] = True
    if not updates:
        return levers
    try:
        return Levers.model_validate({**levers.model_dump(), **updates})
    except ValueError as exc:
        _fail(f"levers: {exc}")


def _synthetic(plans: list, spec, seed: int | None, levers):
    """Simulate the spec's synthetic population."""
    from billing.cli.context import cost_book
    from billing.simulate.core import simulate as run_simulation

    customers, period = spec.customer_inputs(seed), spec.the_period()
    book = spec.book(None if spec.prices is not None else cost_book())
    with _progress(len(customers)) as advance:
        return run_simulation(plans, customers, period, book, levers=levers, source="synthetic", progress=advance)


def _history(plans: list, month: str, levers):
    """Re-rate a past month of the ledger under the plans."""
    from sqlalchemy.exc import SQLAlchemyError

    from billing.cli.context import cost_book, report_engine
    from billing.simulate.history import simulate_history

    try:
        with _progress(None) as advance:
            return simulate_history(report_engine(), month, plans, cost_book(), levers=levers, progress=advance)
    except ValueError as exc:
        _fail(f"--history: {exc}")
    except SQLAlchemyError as exc:
        _fail(f"cannot read the ledger (BILLING_DATABASE_URL; run `billing db upgrade`?): "
              f"{type(exc).__name__}: {str(exc).splitlines()[0]}")


@contextmanager
def _progress(total: int | None):
    """A transient progress bar on stderr (nothing on a pipe or in --json output); without a
    total (history: customer-plan ratings), a running count."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from billing.cli.render import err_console

    columns = [TextColumn("simulating customers"), BarColumn(), MofNCompleteColumn()] if total is not None else [
        TextColumn("simulating: {task.completed:,.0f} rated")]
    with Progress(*columns, TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("simulate", total=total)
        yield lambda n: bar.advance(task, n)


def _m(value: Decimal | None, currency: str = "USD") -> str:
    from billing.reports.render import money

    return money(value, currency)


def _p(value: Decimal | None) -> str:
    from billing.reports.render import pct

    return pct(value)


def _be(value: Decimal | None, currency: str) -> str:
    if value is None:
        return ""
    return "usage covers cost" if value <= 0 else _m(value, currency)


def _table(*columns: str, title: str, caption: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 or name in ("Segment", "Customer", "Charge", "Policy")
                         else "right")
    return table


def print_simulation(sim, top: int = 5) -> None:
    what = "synthetic population" if sim.source == "synthetic" else "ledger history"
    console.print(f"[bold]Simulation[/bold] of {what}, period {sim.period.label}", highlight=False)
    for line in sim.levers.describe():
        console.print(f"  lever: {line}", highlight=False)
    console.print(_plans_table(sim))
    for plan in sim.plans:
        gate = sim.quota(plan.ref)
        if gate is not None:
            denied = ", ".join(f"{n:,} {reason}" for reason, n in sorted(gate.denied.items())) or "none"
            console.print(f"  {plan.ref} quota: {gate.downgraded:,} of {gate.interactions:,} metered interactions "
                          f"on the slow lane, denied: {denied}", highlight=False)
    for plan in sim.plans:
        _print_plan_detail(sim, plan, top)


def _plans_table(sim):
    """The plans side by side (and what was actually billed, for a history)."""
    actual = sim.actual_totals()
    table = _table("Plan", "Customers", "Revenue", "Provider cost", "Margin", "Margin %", "Break-even / seat",
                   "Throttled", title="Plans side by side",
                   caption="Break-even / seat: the recurring price per seat that, replacing the plan's recurring "
                           "fees (usage charges as rated), makes revenue equal provider cost.")
    if actual is not None:
        billed, cost = actual
        table.add_row("[italic]actually billed[/italic]", "", _m(billed), _m(cost), _m(billed - cost),
                      _p((billed - cost) / billed * 100 if billed else None), "", "")
    for plan in sim.plans:
        total = sim.total(plan.ref)
        c = plan.currency
        cost = _m(total.cost, c)
        if total.baseline_cost is not None and total.baseline_cost != total.cost:
            cost += f" (was {_m(total.baseline_cost, c)})"
        margin = _m(total.margin, c)
        table.add_row(f"{plan.ref} — {plan.name}", f"{total.customers:,}", _m(total.revenue, c), cost,
                      f"[red]{margin}[/red]" if total.margin < 0 else margin, _p(total.margin_pct),
                      _be(total.break_even_seat_price(), c), f"{len(sim.throttled(plan.ref)):,}")
    return table


def _print_plan_detail(sim, plan, top: int) -> None:
    """One plan's segments, actual plans, margin distribution, movers and throttled customers."""
    c = plan.currency
    seg = _table("Segment", "Customers", "Revenue", "Provider cost", "Margin", "Margin %", "Revenue / customer",
                 "Break-even / seat", title=f"{plan.ref}: by segment")
    for name, a in sim.segments(plan.ref).items():
        margin = _m(a.margin, c)
        seg.add_row(name, f"{a.customers:,}", _m(a.revenue, c), _m(a.cost, c),
                    f"[red]{margin}[/red]" if a.margin < 0 else margin, _p(a.margin_pct),
                    _m(a.revenue / a.customers if a.customers else None, c), _be(a.break_even_seat_price(), c))
    console.print(seg)
    groups = sim.groups(plan.ref, "actual_plan") if sim.has_actual else {}
    if len(groups) > 1:
        gt = _table("Actual plan", "Customers", "Billed", "Simulated", "Provider cost", "Margin", "Margin %",
                    title=f"{plan.ref}: by the plan customers are on")
        for name, a in groups.items():
            gt.add_row(name, f"{a.customers:,}", _m(a.actual, c), _m(a.revenue, c), _m(a.cost, c),
                       _m(a.margin, c), _p(a.margin_pct))
        console.print(gt)
    dist = " ".join(f"[{b.label()}]: {b.count}" for b in sim.margin_distribution(plan.ref) if b.count)
    console.print(f"  customer margin % distribution: {dist}", highlight=False)
    _print_movers(sim, plan, top)
    _print_throttled(sim, plan, top)


def _print_movers(sim, plan, top: int) -> None:
    movers = sim.movers(plan.ref, top)
    if movers and (sim.has_actual or plan is not sim.plans[0]):
        c = plan.currency
        ref = "actual bill" if sim.has_actual else f"{sim.plans[0].ref}"
        mv = _table("Customer", "Segment", ref.capitalize(), "Simulated", "Change",
                    title=f"{plan.ref}: biggest changes vs {ref}")
        for r, reference, delta in movers:
            mv.add_row(r.customer, r.segment, _m(reference, c), _m(r.revenue, c), _m(delta, c))
        console.print(mv)


def _print_throttled(sim, plan, top: int) -> None:
    throttled = sim.throttled(plan.ref)
    if throttled:
        tt = _table("Customer", "Segment", "Charge", "Policy", "Used", "Included", "Beyond",
                    title=f"{plan.ref}: {len(throttled):,} customer(s) would have been throttled "
                          "(past included units under block / downgrade / rate_limit)")
        for r in throttled[:top]:
            for t in r.throttled:
                tt.add_row(r.customer, r.segment, t.charge, t.policy, f"{t.units:,}", f"{t.included:,}",
                           f"{t.beyond:,}")
        if len(throttled) > top:
            tt.add_row(f"… and {len(throttled) - top:,} more", "", "", "", "", "", "")
        console.print(tt)
