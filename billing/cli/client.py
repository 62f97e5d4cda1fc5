"""`billing client ...`: the Python client's local state (its spool of commits)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from billing.cli.context import fail
from billing.cli.render import console, print_json

app = typer.Typer(help="The Python client's spool of commits waiting for the service.", no_args_is_help=True)


@app.command("flush-spool")
def flush_spool(directory: Annotated[Path, typer.Argument(help="The spool directory (the client's spool_dir).")],
                url: Annotated[str, typer.Option("--url", envvar="BILLING_URL",
                                                 help="The billing service, e.g. http://127.0.0.1:8000.")],
                api_key: Annotated[str, typer.Option("--api-key", envvar="BILLING_API_KEY",
                                                     help="An API key with the check scope (ingest too, for "
                                                          "commits whose hold was released).")],
                limit: Annotated[int | None, typer.Option(help="Send at most this many.")] = None,
                as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Send spooled commits again, oldest first, until acknowledged. Exit 1 if some are
    still pending (the service unreachable) or were refused (kept under DIR/rejected/)."""
    from billing.client import HttpClient, Spool

    if not directory.is_dir():
        fail(f"{directory}: not a directory")
    with HttpClient(url, api_key, spool_dir=directory) as client:
        report = client.flush_spool(limit=limit)
    report["rejected_total"] = len(Spool(directory).rejected())
    if as_json:
        print_json(report)
    else:
        console.print(f"delivered {report['delivered']}, refused {report['rejected']} (kept in "
                      f"{directory / 'rejected'}), still pending {report['pending']}", highlight=False)
        for error in report["errors"]:
            console.print(f"  refused: {error.get('code')}: {error.get('message')}", highlight=False)
    if report["pending"] or report["rejected"]:
        raise typer.Exit(1)
