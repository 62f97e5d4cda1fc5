"""`billing costs ...`: the cost book (provider prices per 1M tokens), prices added to the
ledger, re-costing, and LiteLLM import."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from billing.cli.context import catalog, cost_book, engine, fail, fail_with
from billing.cli.render import console, err_console, print_json
from billing.costs import CostBook, CostBookError, ModelPrice, dump_yaml, extra_fields, import_litellm
from billing.money import dec_str

app = typer.Typer(help="The cost book: provider prices per 1M tokens; prices added to the ledger; re-costing "
                       "unpriced events; import LiteLLM's price map.", no_args_is_help=True)


def load_book(extra: list[Path] | None) -> CostBook:
    """The command's cost book: shipped < BILLING_COSTS < prices added to the ledger < ``extra``."""
    return cost_book(extra)


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        fail(f"{name}: not a date (YYYY-MM-DD): {text!r}")
    raise AssertionError("unreachable")


@app.command("list")
def list_prices(
    at: Annotated[str | None, typer.Option(help="Prices in force on this date (YYYY-MM-DD); default: every version.")] = None,
    costs: Annotated[list[Path] | None, typer.Option("--costs", help="Extra cost data file(s), for this listing only.")] = None,
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
                     "source": entry.source, "retrieved": entry.retrieved.isoformat(),
                     "more": extra_fields(entry)})
    if as_json:
        print_json(rows)
        return
    table = Table("Model", "From", "Input", "Output", "Cache read", "Cache write", "Reasoning", "Batch off",
                  "More", "Source (read on)", title="USD per 1M tokens", title_justify="left")
    for r in rows:
        table.add_row(escape(r["model"]), r["effective_from"], r["input"], r["output"], r["cache_read"],
                      r["cache_write"], r["reasoning"], r["batch_discount"], ", ".join(sorted(r["more"])),
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
    as_json: Annotated[bool, typer.Option("--json", help="Print a summary (kept, skipped, notes, unmapped price fields) as JSON "
                                                      "instead of the YAML (use with --output).")] = False,
    add: Annotated[bool, typer.Option("--add", help="Also add the prices to the ledger (as `costs add`) and "
                                                    "re-cost the unpriced events they price.")] = False,
) -> None:
    """Convert LiteLLM's price map into cost-book data (YAML, prices per 1M tokens, exact).

    Use the result with `--costs FILE` (`costs list`, `invoice preview`), list it in
    BILLING_COSTS, give it to `costs add`, or pass --add to add it to the ledger now."""
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
               "unmapped": result.unmapped, "output": str(output) if output else None}
    added = _add(list(result.book), f"litellm:{path.name}", quiet=as_json) if add else None
    if as_json:
        print_json({**summary, "skipped_reasons": result.skipped, **({"ledger": added} if added else {})})
    else:
        err_console.print(f"kept {summary['kept']} model price(s), skipped {summary['skipped']}; "
                          f"{len(result.notes)} note(s) on how prices were read", highlight=False)
        for name, keys in result.unmapped.items():
            err_console.print(f"  not mapped: {escape(name)} ({len(keys)} model(s), e.g. {escape(keys[0])})",
                              highlight=False)
        if added:
            _print_added(added, err_console)


@contextmanager
def _progress(quiet: bool):
    """A running count of re-costed events on stderr (none for --json or on a pipe)."""
    import sys

    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    if quiet or not sys.stderr.isatty():
        yield None
        return
    with Progress(TextColumn("re-costing: {task.completed:,.0f} events read"), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("recost", total=None)
        yield lambda n: bar.advance(task, n)


def _ledger_failed(exc: Exception) -> None:
    fail(f"cannot update the ledger (BILLING_DATABASE_URL; run `billing db upgrade`?): "
         f"{type(exc).__name__}: {str(exc).splitlines()[0]}")


def _add(entries: list[ModelPrice], origin: str, *, quiet: bool) -> dict:
    from sqlalchemy.exc import SQLAlchemyError

    from billing.errors import BillingError
    from billing.ledger.recost import add_prices

    try:
        with _progress(quiet) as advance:
            return add_prices(engine(), catalog(), entries, origin=origin, progress=advance).to_json()
    except CostBookError as exc:
        fail(f"cost data: {exc.message}")
    except BillingError as exc:
        fail_with(exc)
    except SQLAlchemyError as exc:
        _ledger_failed(exc)
    raise AssertionError("unreachable")


def _print_added(summary: dict, out=console) -> None:
    if "added" in summary:
        out.print(f"prices: {len(summary['added'])} added, {len(summary['replaced'])} replaced, "
                  f"{summary['unchanged']} unchanged", highlight=False)
    out.print(f"re-costed {summary['events_recosted']} unpriced event(s) (+${summary['cost_added']}); "
              f"{summary['invoices_to_recheck']} invoiced period(s) will be corrected at the next close; "
              f"{summary['still_unpriced']} still unpriced", highlight=False)
    for model, n in summary["by_model"].items():
        out.print(f"  {escape(model)}: {n}", highlight=False)


@app.command("add")
def add_cmd(
    files: Annotated[list[Path], typer.Argument(help="Cost data file(s) (YAML, the format of billing/costs/data/).")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Add prices to the ledger (every process using this database prices with them), then
    re-cost the unpriced events they price. Idempotent: adding the same file again changes
    nothing. A price for a model and date already added is replaced; events already
    costed keep their cost."""
    try:
        entries = list(CostBook.from_files(files))
    except CostBookError as exc:
        fail(f"cost data: {exc.message}")
    except OSError as exc:
        fail(f"cost data: cannot read {exc.filename}: {exc.strerror}")
    summary = _add(entries, ", ".join(f.name for f in files), quiet=as_json)
    if as_json:
        print_json(summary)
    else:
        _print_added(summary)


@app.command("recost")
def recost_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Re-cost the unpriced events that the cost book (shipped, BILLING_COSTS, prices added
    to the ledger) can price now: after a change of BILLING_COSTS, or to finish an
    interrupted `costs add`. Idempotent."""
    from sqlalchemy.exc import SQLAlchemyError

    from billing.errors import BillingError
    from billing.ledger.recost import recost

    book = cost_book()
    try:
        with _progress(as_json) as advance:
            summary = recost(engine(), catalog(), book=book, progress=advance).to_json()
    except BillingError as exc:
        fail_with(exc)
    except SQLAlchemyError as exc:
        _ledger_failed(exc)
    if as_json:
        print_json(summary)
    else:
        _print_added(summary)
