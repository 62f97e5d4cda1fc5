"""`billing db ...`, `billing customers ...`, `billing subscriptions ...`, `billing credits ...`,
`billing events import`."""

from __future__ import annotations

import os
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from billing.cli.context import catalog, engine, fail, instant, run
from billing.cli.render import console, print_json
from billing.config import get_settings

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
customers_app = typer.Typer(help="Customers.", no_args_is_help=True)
subs_app = typer.Typer(help="Subscriptions: subscribe, seats, plan changes, cancel.", no_args_is_help=True)
credits_app = typer.Typer(help="Prepaid credit grants.", no_args_is_help=True)
events_app = typer.Typer(help="Usage events.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _accounts():
    from billing.ledger.accounts import Accounts

    return Accounts(engine(), catalog())


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations to BILLING_DATABASE_URL (default: SQLite file billing.db here)."""
    from billing.store.db import upgrade
    from billing.ledger.recount import counters_stale

    upgrade(get_settings().database_url, revision)
    console.print(f"database at {revision}", highlight=False)
    if revision == "head":
        with engine().connect() as conn:
            stale = counters_stale(conn)
        if stale:
            console.print("the usage counters predate this schema: run `billing db recount` (until then invoices "
                          "are rated from the events)", highlight=False)


@db_app.command("recount")
def db_recount(as_json: JsonOpt = False) -> None:
    """Rebuild every usage counter and hourly rollup from the stored events (after loading
    events behind the ledger's back, when `db upgrade` asks for it, or after a change of
    BILLING_ROLLUP_DIMENSIONS). One transaction; ingestion waits."""
    from billing.ledger.recount import recount_all

    def go() -> int:
        with engine().begin() as conn:
            recount_all(conn, catalog(), get_settings().rollup_dimension_names())
            return (conn.exec_driver_sql("SELECT COUNT(*) FROM usage_counter").scalar_one(),
                    conn.exec_driver_sql("SELECT COUNT(*) FROM usage_rollup").scalar_one())

    rows, rollups = run(go)
    print_json({"counters": rows, "rollups": rollups}) if as_json else console.print(
        f"{rows} counters and {rollups} hourly rollups rebuilt", highlight=False)


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(
                     help="The migration to go back to (`base`: drop every table and its data).")],
                 yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False) -> None:
    """Undo migrations down to REVISION. Asks first (tables and columns it removes take their
    data with them); `--yes` for scripts."""
    from billing.store.db import current_revision, downgrade, engine_for

    url = get_settings().database_url
    current = run(lambda: current_revision(engine_for(url)))
    if current is None:
        fail("the database has no billing tables: nothing to downgrade")
    what = "drop every table and the data in it" if revision == "base" else f"undo the migrations after {revision}"
    if not yes:
        if not sys.stdin.isatty():
            fail(f"`billing db downgrade {revision}` would {what} (the database is at {current}); "
                 "add --yes to confirm")
        typer.confirm(f"The database is at {current}. Downgrading to {revision} will {what}. Continue?", abort=True)
    downgrade(url, revision)
    console.print(f"database at {revision}", highlight=False)


@customers_app.command("create")
def customer_create(customer_id: str, name: str = "", timezone: str = "UTC", currency: str = "USD",
                    as_json: JsonOpt = False) -> None:
    """Create a customer (idempotent for the same details)."""
    row = run(lambda: _accounts().create_customer(customer_id, name=name, timezone=timezone, currency=currency,
                                                  now=instant(None)))
    print_json(row.model_dump(mode="json")) if as_json else console.print(f"customer {row.id}", highlight=False)


@customers_app.command("threshold")
def customer_threshold(customer_id: str,
                       amount: Annotated[str, typer.Argument(help="e.g. 50.00, or 'none' for the plan's again.")],
                       as_json: JsonOpt = False) -> None:
    """Set the customer's own invoice_when_due_reaches (an invoice is cut whenever the usage
    accrued since its last invoice reaches it), overriding its plan's."""
    from decimal import Decimal, InvalidOperation

    from billing.errors import BillingError, ErrorCode

    def go():
        if amount.strip().lower() == "none":
            return _accounts().set_threshold(customer_id, None)
        try:
            value = Decimal(amount.strip())
        except InvalidOperation:
            raise BillingError(f"not an amount: {amount!r}", code=ErrorCode.VALIDATION) from None
        return _accounts().set_threshold(customer_id, value)

    row = run(go)
    print_json(row.model_dump(mode="json")) if as_json else console.print(
        f"{customer_id}: invoice when due reaches {row.invoice_when_due_reaches or 'the plan threshold'}",
        highlight=False)


@customers_app.command("guard")
def customer_guard(customer_id: str,
                   file: Annotated[Path | None, typer.Option("--file", help="YAML/JSON of the cost_guard mapping.")] = None,
                   clear: Annotated[bool, typer.Option("--clear", help="Back to the plan's cost guards.")] = False,
                   as_json: JsonOpt = False) -> None:
    """Set the customer's own cost guardrails (plans/README.md "Cost guardrails"), replacing
    its plan's in quota decisions; --clear goes back to the plan's."""
    import json

    import yaml

    if clear == (file is not None):
        fail("give either --file or --clear")
    guard = None if clear else yaml.safe_load(file.read_text())
    row = run(lambda: _accounts().set_cost_guard(customer_id, guard))
    shown = None if row.cost_guard is None else json.loads(row.cost_guard)
    if as_json:
        print_json({"customer": row.id, "cost_guard": shown})
    else:
        console.print(f"customer {row.id}: " + ("the plan's cost guards" if shown is None else f"cost guard {shown}"),
                      highlight=False)


@customers_app.command("list")
def customer_list(as_json: JsonOpt = False) -> None:
    from sqlmodel import Session

    from billing.store.repository import list_customers

    with Session(engine()) as s:
        rows = list_customers(s)
    if as_json:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    table = Table("Customer", "Name", "Timezone", "Currency")
    for r in rows:
        table.add_row(r.id, r.name, r.timezone, r.currency)
    console.print(table)


@subs_app.command("create")
def subscribe(customer_id: str, plan: str, at: Annotated[str | None, typer.Option(help="Start (ISO); default now.")] = None,
              seats: int = 1, version: int | None = None, as_json: JsonOpt = False) -> None:
    """Subscribe a customer to a plan (the version in force at the start is pinned)."""
    sub = run(lambda: _accounts().subscribe(customer_id, plan, at=instant(at, "--at"), seats=seats, version=version))
    print_json(sub.model_dump(mode="json")) if as_json else console.print(
        f"subscription {sub.id}: {customer_id} on {sub.plan_id} v{sub.plan_version}", highlight=False)


@subs_app.command("seats")
def seats(customer_id: str, count: int, at: Annotated[str | None, typer.Option()] = None,
          as_json: JsonOpt = False) -> None:
    """Change the seat count from an instant on (prorated)."""
    change = run(lambda: _accounts().change_seats(customer_id, count, at=instant(at, "--at")))
    print_json(change.model_dump(mode="json")) if as_json else console.print(f"{customer_id}: {count} seats",
                                                                             highlight=False)


@subs_app.command("change-plan")
def change_plan(customer_id: str, plan: str, at: Annotated[str | None, typer.Option()] = None,
                version: int | None = None, as_json: JsonOpt = False) -> None:
    """End the current plan at an instant and start another one (each part billed once)."""
    sub = run(lambda: _accounts().change_plan(customer_id, plan, at=instant(at, "--at"), version=version))
    print_json(sub.model_dump(mode="json")) if as_json else console.print(
        f"subscription {sub.id}: {customer_id} now on {sub.plan_id} v{sub.plan_version}", highlight=False)


@subs_app.command("cancel")
def cancel(customer_id: str, at: Annotated[str | None, typer.Option()] = None, as_json: JsonOpt = False) -> None:
    """End the current subscription at an instant (its last part is billed at the next close)."""
    sub = run(lambda: _accounts().cancel(customer_id, at=instant(at, "--at")))
    print_json(sub.model_dump(mode="json")) if as_json else console.print(f"{customer_id}: canceled",
                                                                          highlight=False)


@credits_app.command("grant")
def grant(customer_id: str, amount: str, expires: Annotated[str | None, typer.Option(help="Expiry (ISO).")] = None,
          at: Annotated[str | None, typer.Option(help="Usable from (ISO); default now.")] = None,
          name: str = "Prepaid credits", grant_id: Annotated[str | None, typer.Option("--id")] = None,
          as_json: JsonOpt = False) -> None:
    """Grant prepaid credits (drawn before overage, soonest expiry first)."""
    try:
        value = Decimal(amount)
    except InvalidOperation:
        fail(f"not an amount: {amount!r}")
    row = run(lambda: _accounts().grant_credits(customer_id, value, at=instant(at, "--at"),
                                                expires_at=instant(expires, "--expires") if expires else None,
                                                name=name, grant_id=grant_id))
    print_json(row.model_dump(mode="json")) if as_json else console.print(f"grant {row.id}: {amount} to {customer_id}",
                                                                          highlight=False)


_PARALLEL_BYTES = 8 << 20  # a smaller file: the second process's start costs more than it saves


@events_app.command("import")
def events_import(path: Path, as_json: JsonOpt = False,
                  batch: Annotated[int | None, typer.Option(
                      min=1, max=100_000, show_default=False,
                      help="Events per transaction (default: 50,000).")] = None,
                  parallel: Annotated[bool | None, typer.Option(
                      "--parallel/--no-parallel",
                      help="Parse and validate the file in a second process while this one writes "
                           f"(default: for files over {_PARALLEL_BYTES // 2**20} MiB, given two CPUs).")] = None,
                  ) -> None:
    """Import a JSONL file of events, streaming (memory stays flat whatever the file's length).

    Idempotent: re-importing, also after a crash mid-file, counts nothing twice. Each bad line
    is its own rejection, reported with its line number; the other lines are imported."""
    from billing.ledger.jsonl import JsonlEvents
    from billing.ledger.prepare_process import PreparingReader

    if not path.is_file():
        fail(f"{path}: no such file")
    if parallel is None:  # (with one core to run on, a second process only adds its own work)
        parallel = path.stat().st_size > _PARALLEL_BYTES and _cores() > 1
    events = PreparingReader(path) if parallel else JsonlEvents(path)
    if parallel:  # its interpreter starts and loads its modules while this one loads the ledger
        events.start()
    try:
        result, lines = _import(events, as_json, batch or 50_000)
    finally:
        if parallel:
            events.close()
    lines.take()
    summary = _import_summary(result, events, lines.of)
    if as_json:
        print_json(summary)
    else:
        kept = (f" ({summary['unpriced']} unpriced, {summary['unmetered']} unmetered: `billing events unpriced`)"
                if summary["unpriced"] or summary["unmetered"] else "")
        console.print(f"accepted {summary['accepted']}{kept}, duplicates {summary['duplicates']}, "
                      f"conflicts {summary['conflicts']}, rejected {summary['rejected']}", highlight=False)
        for err in summary["errors"][:20]:
            console.print(f"  line {err['line']}: {err['code']}: {err['message']}", highlight=False)
        if len(summary["errors"]) > 20 or summary["errors_omitted"]:
            console.print(f"  ... {summary['conflicts'] + summary['rejected'] - 20:,} more (use --json)",
                          highlight=False)
    raise typer.Exit(1 if summary["conflicts"] or summary["rejected"] else 0)


def _cores() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _import(events, as_json: bool, batch: int):
    """Record ``events`` (the file's reader); (the result, the problems' lines)."""
    from billing.ledger.ingest import BatchResult, Ledger
    from billing.ledger.prepare_process import PrepareProcessError
    from billing.store.db import make_engine

    settings = get_settings()
    # its own engine: SQLite without a memory map (mapped pages of the growing file count as the
    # import's resident memory, which must stay flat whatever the file's length) and with a
    # 16 MiB page cache (the pages an import touches again are the last leaf of each index
    # per customer: a larger cache wrote no faster). Chunks of 50,000: with 25,000 the writer,
    # the import's bottleneck, spent about 8% more time per event (twice the commits, the
    # subscription reads and the counter upserts)
    ledger = Ledger(run(lambda: make_engine(settings.database_url, sqlite_mmap=0, sqlite_cache_kib=16384)), catalog(),
                    future_tolerance_seconds=settings.future_tolerance_seconds)
    result = BatchResult(keep_events=False)
    lines = _ProblemLines(events, result)
    try:
        if sys.stderr.isatty() and not as_json:
            with Progress(TextColumn("importing"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
                          TextColumn("{task.fields[done]:,} events"), console=console) as bar:
                task = bar.add_task("import", total=events.size, done=0)

                def progress(_n: int) -> None:
                    lines.take()
                    bar.update(task, completed=events.bytes_read, done=result.size)

                run(lambda: ledger.record(events, chunk_size=batch, result=result, progress=progress))
        else:
            run(lambda: ledger.record(events, chunk_size=batch, result=result, progress=lambda _n: lines.take()))
    except PrepareProcessError as exc:
        lines.take()
        fail(f"{exc}; the first {result.size:,} events were recorded (run the import again: it is idempotent)")
    finally:
        ledger.close()
        ledger.engine.dispose()
    return result, lines


class _ProblemLines:
    """The file lines of the ledger's problems, taken after each committed chunk; then the
    reader forgets the lines of the events before it (its memory stays bounded)."""

    def __init__(self, events, result) -> None:
        self.events, self.result = events, result
        self.of: dict[int, int] = {}  # event index -> file line
        self._taken = 0

    def take(self) -> None:
        problems = self.result.problems
        for e in problems[self._taken:]:
            self.of[e.index] = self.events.line_of(e.index)
        self._taken = len(problems)
        self.events.forget_before(self.result.size)


def _import_summary(result, events, lines: dict[int, int], max_errors: int = 1000) -> dict:
    """The ledger's counts plus the bad lines; every problem with its file line, in line order."""
    errors = [{"line": lines[e.index], **{k: v for k, v in e.to_json().items() if k != "index"}}
              for e in result.errors()]
    errors = sorted(errors + events.problems, key=lambda e: e["line"])
    summary = result.to_json()
    summary["rejected"] += events.bad_lines
    summary["errors"] = errors[:max_errors]
    summary["errors_omitted"] = summary["conflicts"] + summary["rejected"] - len(summary["errors"])
    return summary
