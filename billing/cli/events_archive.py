"""`billing events archive` and `billing events verify-archive` (``billing.ledger.archive``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from billing.cli.context import engine, fail, run
from billing.cli.ledger_cmds import JsonOpt, events_app
from billing.cli.render import console, print_json


@events_app.command("archive")
def events_archive(
    before: Annotated[str, typer.Option(help="Archive the events before this month (YYYY-MM, UTC).")],
    out: Annotated[Path, typer.Option(help="Directory for the files and manifest.json.")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl (gzip) or parquet (needs pyarrow).")] = "jsonl",
    as_json: JsonOpt = False,
) -> None:
    """Move the events of fully closed and paid periods before a month out of the ledger into
    compressed files with a manifest (counts, sums, cost per customer and period), then drop
    them (PostgreSQL: their monthly partitions). Refuses when any of their periods is not
    closed or not paid. Events of the archived months are rejected (event_archived) afterwards."""
    from billing.ledger.archive import archive

    manifest = run(lambda: archive(engine(), before, out, fmt))
    if as_json:
        print_json({k: manifest[k] for k in ("before", "events", "files") if k in manifest})
        return
    if not manifest["events"]:
        console.print(f"nothing to archive before {before}", highlight=False)
        return
    console.print(f"{manifest['events']:,} events archived to {out} in {len(manifest['files'])} file(s), "
                  f"{len(manifest['periods'])} customer periods in manifest.json", highlight=False)


@events_app.command("verify-archive")
def events_verify_archive(
    directory: Annotated[Path, typer.Argument(help="An archive's directory (with manifest.json).")],
    as_json: JsonOpt = False,
) -> None:
    """Check an archive against its manifest and the ledger: the files' hashes, counts, sums and
    costs per customer period, and that each invoice is still paid with the same total and
    provider cost. Exits 1 when anything differs."""
    from billing.ledger.archive import MANIFEST, verify

    if not (directory / MANIFEST).is_file():
        fail(f"{directory} holds no {MANIFEST}: not an archive's directory")
    result = run(lambda: verify(engine(), directory))
    if as_json:
        print_json(result)
    elif result["ok"]:
        console.print(f"ok: {result['events']:,} events, {result['periods']} customer periods verify", highlight=False)
    else:
        for problem in result["problems"]:
            console.print(problem, highlight=False, soft_wrap=True)
    if not result["ok"]:
        raise typer.Exit(1)
