"""`billing plans ...`: validate and list plan files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from billing.catalog import validate_paths
from billing.cli.render import console, err_console, print_json

app = typer.Typer(help="Plan files: validate and list.", no_args_is_help=True)


@app.command("validate")
def validate(
    paths: Annotated[list[Path] | None, typer.Argument(help="Plan files or directories (default: plans/).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print problems as JSON.")] = False,
) -> None:
    """Check plan files; report EVERY problem with its file, line and path. Exit 1 on any problem."""
    plans, problems = validate_paths(list(paths or [Path("plans")]))
    if as_json:
        print_json({"plans": [p.ref for p in plans], "problems": [p.__dict__ for p in problems]})
    else:
        for problem in problems:
            err_console.print(f"[red]error[/red] {escape(str(problem))}", highlight=False, soft_wrap=True)
        for plan in plans:
            console.print(f"[green]ok[/green] {plan.ref}  {escape(plan.name)}", highlight=False)
        if problems:
            err_console.print(f"{len(problems)} problem(s) found", highlight=False)
    raise typer.Exit(1 if problems else 0)


@app.command("list")
def list_plans(
    paths: Annotated[list[Path] | None, typer.Argument()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List plan versions with their effective dates."""
    plans, problems = validate_paths(list(paths or [Path("plans")]))
    rows = [{"plan": p.plan, "version": p.version, "name": p.name,
             "effective_from": p.effective_from.isoformat(), "currency": p.currency} for p in plans]
    if as_json:
        print_json(rows)
    else:
        for r in rows:
            console.print(f"{r['plan']:<24} v{r['version']:<3} {r['effective_from']:<26} {escape(r['name'])}", highlight=False)
    raise typer.Exit(1 if problems else 0)
