"""`billing keys ...`: API keys (stored hashed; the key is shown once, at creation)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from billing.cli.context import engine, fail, run
from billing.cli.render import console, print_json

app = typer.Typer(help="API keys for the HTTP API.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("create")
def create(scope: Annotated[str, typer.Option(help="ingest | check | read | admin")],
           customer: Annotated[str | None, typer.Option(help="Restrict the key to this customer's data.")] = None,
           name: Annotated[str, typer.Option(help="A label for the key.")] = "",
           as_json: JsonOpt = False) -> None:
    """Create an API key and print it (it cannot be shown again)."""
    from billing.api.auth import SCOPES, create_key

    if scope not in SCOPES:
        fail(f"--scope must be one of: {', '.join(SCOPES)}")
    key_id, key = run(lambda: create_key(engine(), scope, customer=customer, name=name))
    if as_json:
        print_json({"id": key_id, "key": key, "scope": scope, "customer": customer, "name": name})
        return
    console.print(f"key {key_id} ({scope}{', customer ' + customer if customer else ''}):", highlight=False)
    console.print(key, highlight=False, soft_wrap=True)
    console.print("[dim]store it now: only its hash is kept[/dim]")


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List keys (ids, scopes, customers; never the keys)."""
    from billing.api.auth import list_keys

    rows = list_keys(engine())
    if as_json:
        print_json(rows)
        return
    table = Table("Id", "Scope", "Customer", "Name", "Revoked")
    for r in rows:
        table.add_row(r["id"], r["scope"], r["customer_id"] or "", r["name"], "yes" if r["revoked_at"] else "")
    console.print(table)


@app.command("revoke")
def revoke(key_id: str) -> None:
    """Revoke a key by id (every server refuses it within BILLING_KEY_CACHE_SECONDS, 1 s)."""
    from billing.api.auth import revoke_key

    if not revoke_key(engine(), key_id):
        fail(f"no active key {key_id!r}")
    console.print(f"revoked {key_id}", highlight=False)
