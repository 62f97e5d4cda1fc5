"""`billing costs ...`: the cost book (provider prices per 1M tokens), and LiteLLM import."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from billing.cli.context import fail
from billing.cli.render import console, err_console, print_json
from billing.costs import CostBook, CostBookError, dump_yaml, import_litellm
from billing.money import dec_str

app = typer.Typer(help="The cost book: provider prices per 1M tokens; import LiteLLM's price map.",
                  no_args_is_help=True)


def load_book(extra: list[Path] | None) -> CostBook:
    """The shipped book, with the entries of ``extra`` data files added (they win on conflicts)."""
    book = CostBook.load_default()
    if not extra:
        return book
    try:
        return book.merged(CostBook.from_files(extra))
    except CostBookError as exc:
        fail(f"cost data: {exc.message}")
    except OSError as exc:
        fail(f"cost data: cannot read {exc.filename}: {exc.strerror}")
    raise AssertionError("unreachable")


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        fail(f"{name}: not a date (YYYY-MM-DD): {text!r}")
    raise AssertionError("unreachable")


@app.command("list")
def list_prices(
    at: Annotated[str | None, typer.Option(help="Prices in force on this date (YYYY-MM-DD); default: every version.")] = None,
    costs: Annotated[list[Path] | None, typer.Option("--costs", help="Extra cost data file(s) to add.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every model's price per 1M tokens, with its source and the date it was read."""
    book = load_book(costs)
    day = _day(at, "--at") if at else None
    rows = []
    for entry in book:
        if day is not None and entry is not _in_force(book, entry.model, day):
            continue
        rows.append({"model": entry.model, "provider": entry.provider,
                     "effective_from": entry.effective_from.isoformat(),
                     **{k: dec_str(v) for k, v in entry.prices().items()},
                     "batch_discount": dec_str(entry.batch_discount), "aliases": list(entry.aliases),
                     "source": entry.source, "retrieved": entry.retrieved.isoformat()})
    if as_json:
        print_json(rows)
        return
    table = Table("Model", "From", "Input", "Output", "Cache read", "Cache write", "Reasoning", "Batch off",
                  "Source (read on)", title="USD per 1M tokens", title_justify="left")
    for r in rows:
        table.add_row(escape(r["model"]), r["effective_from"], r["input"], r["output"], r["cache_read"],
                      r["cache_write"], r["reasoning"], r["batch_discount"],
                      escape(f"{r['source']} ({r['retrieved']})"))
    console.print(table)


def _in_force(book: CostBook, model: str, day: date):
    versions = [v for v in book.versions(model) if v.effective_from <= day]
    return versions[-1] if versions else None


@app.command("import-litellm")
def import_cmd(
    path: Annotated[Path, typer.Argument(help="LiteLLM's model_prices_and_context_window.json.")],
    effective_from: Annotated[str, typer.Option("--effective-from", help="Date the prices apply from (YYYY-MM-DD).")],
    retrieved: Annotated[str | None, typer.Option(help="Date the file was read (default: --effective-from).")] = None,
    provider: Annotated[list[str] | None, typer.Option("--provider", help="Keep only these litellm_provider values.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the cost data YAML here (default: stdout).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a summary (kept, skipped, notes) as JSON "
                                                      "instead of the YAML (use with --output).")] = False,
) -> None:
    """Convert LiteLLM's price map into cost-book data (YAML, prices per 1M tokens, exact).

    Use the result with `--costs FILE` (`costs list`, `invoice preview`), or drop it into
    billing/costs/data/ to ship it."""
    start = _day(effective_from, "--effective-from")
    read_on = _day(retrieved, "--retrieved") if retrieved else None
    try:
        result = import_litellm(path, effective_from=start, retrieved=read_on,
                                providers=set(provider) if provider else None)
    except OSError as exc:
        fail(f"{path}: cannot read: {exc.strerror}")
    except (ValueError, json.JSONDecodeError) as exc:
        fail(f"{path}: not a LiteLLM price map: {exc}")
    except CostBookError as exc:
        fail(f"{path}: {exc.message}")
    text = dump_yaml(result.book)
    if output is not None:
        output.write_text(text, encoding="utf-8")
    elif not as_json:
        typer.echo(text, nl=False)
    summary = {"kept": len(result.book), "skipped": len(result.skipped), "notes": result.notes,
               "output": str(output) if output else None}
    if as_json:
        print_json({**summary, "skipped_reasons": result.skipped})
    else:
        err_console.print(f"kept {summary['kept']} model price(s), skipped {summary['skipped']}; "
                          f"{len(result.notes)} note(s) on price variants not modelled", highlight=False)
