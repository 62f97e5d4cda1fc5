"""`billing webhooks ...`: webhook endpoints (Standard Webhooks signed), the delivery log and
replays; the same rules as ``/v1/webhook_endpoints`` (``billing.alerts.endpoints``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from billing.cli.context import engine, fail, instant, run
from billing.cli.render import console, print_json

app = typer.Typer(help="Webhook endpoints, the delivery log and replays.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
TypesOpt = Annotated[list[str] | None, typer.Option(
    "--event-type", help="Receive only this type (repeatable; 'invoice.*' for a prefix; default: every type).")]


def _endpoints():
    from billing.alerts.endpoints import Endpoints

    return Endpoints(engine())


def _show(ep: dict, as_json: bool) -> None:
    if as_json:
        print_json(ep)
        return
    console.print(f"{ep['id']}  {ep['status']}  {ep['url']}", highlight=False, soft_wrap=True)
    console.print(f"  event types: {', '.join(ep['event_types']) or 'every type'}", highlight=False)
    if "secret" in ep:
        console.print(f"  secret: {ep['secret']}", highlight=False, soft_wrap=True)


@app.command("create")
def create(url: str, event_type: TypesOpt = None,
           description: Annotated[str | None, typer.Option(help="A label.")] = None,
           as_json: JsonOpt = False) -> None:
    """Add an endpoint (http or https URL) and print it with its signing secret."""
    now = datetime.now(UTC)
    _show(run(lambda: _endpoints().create(url, event_types=event_type or None, description=description, now=now)),
          as_json)


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """Every endpoint (never the secrets)."""
    rows, after = [], None
    while True:
        page, more = _endpoints().list(limit=100, starting_after=after)
        rows += page
        if not more:
            break
        after = page[-1]["id"]
    if as_json:
        print_json(rows)
        return
    table = Table("Id", "Status", "URL", "Event types")
    for r in rows:
        table.add_row(r["id"], r["status"], r["url"], ", ".join(r["event_types"]) or "every type")
    console.print(table)


@app.command("show")
def show(endpoint_id: str, secret: Annotated[bool, typer.Option("--secret", help="Print the secret too.")] = False,
         as_json: JsonOpt = False) -> None:
    """One endpoint."""
    _show(run(lambda: _endpoints().get(endpoint_id, with_secret=secret)), as_json)


@app.command("update")
def update(endpoint_id: str, url: Annotated[str | None, typer.Option(help="A new URL.")] = None,
           event_type: TypesOpt = None,
           all_types: Annotated[bool, typer.Option("--all-types", help="Receive every type again.")] = False,
           description: Annotated[str | None, typer.Option(help="A new label.")] = None,
           rotate_secret: Annotated[bool, typer.Option("--rotate-secret", help="Issue a new secret.")] = False,
           as_json: JsonOpt = False) -> None:
    """Change an endpoint's URL, event types, label or secret."""
    types = [] if all_types else (event_type or None)
    now = datetime.now(UTC)
    _show(run(lambda: _endpoints().update(endpoint_id, now=now, url=url, event_types=types,
                                          description=description, rotate_secret=rotate_secret)), as_json)


@app.command("disable")
def disable(endpoint_id: str, as_json: JsonOpt = False) -> None:
    """Stop delivering to an endpoint (its pending deliveries are canceled; replay resends)."""
    _show(run(lambda: _endpoints().update(endpoint_id, now=datetime.now(UTC), status="disabled")), as_json)


@app.command("enable")
def enable(endpoint_id: str, as_json: JsonOpt = False) -> None:
    """Deliver to a disabled endpoint again (new events)."""
    _show(run(lambda: _endpoints().update(endpoint_id, now=datetime.now(UTC), status="enabled")), as_json)


@app.command("delete")
def delete(endpoint_id: str) -> None:
    """Remove an endpoint (its delivery log stays)."""
    if not _endpoints().delete(endpoint_id):
        fail(f"no webhook endpoint {endpoint_id!r}")
    console.print(f"deleted {endpoint_id}", highlight=False)


@app.command("deliveries")
def deliveries_(endpoint: Annotated[str | None, typer.Option(help="One endpoint's ('env': BILLING_WEBHOOK_URL).")]
                = None,
                event: Annotated[str | None, typer.Option(help="One event id (the webhook-id).")] = None,
                status: Annotated[str | None, typer.Option(help="pending | delivered | dead | canceled")] = None,
                limit: Annotated[int, typer.Option(min=1, max=1000)] = 50, as_json: JsonOpt = False) -> None:
    """The delivery log, newest first: each delivery with its attempts."""
    from billing.alerts import deliveries

    if status is not None and status not in ("pending", "delivered", "dead", "canceled"):
        fail("--status must be one of: pending, delivered, dead, canceled")
    page, _ = deliveries.log(engine(), endpoint=endpoint, event=event, status=status, limit=limit)
    if as_json:
        print_json(page)
        return
    table = Table("Id", "Event", "Endpoint", "Status", "Attempts", "Last")
    for d in page:
        last = d["log"][-1] if d["log"] else None
        table.add_row(str(d["id"]), d["event_id"], d["endpoint"], d["status"], str(d["attempts"]),
                      "" if last is None else f"{last['at']} {last['status_code'] or last['error']}")
    console.print(table)


@app.command("replay")
def replay(event: Annotated[list[str] | None, typer.Option("--event", help="An event id (repeatable).")] = None,
           since: Annotated[str | None, typer.Option(help="Every event created at or after this instant.")] = None,
           endpoint: Annotated[str | None, typer.Option(
               help="Only this endpoint (also sends it events it never had, if it takes their type).")] = None,
           status: Annotated[str | None, typer.Option(help="Only deliveries in this status (e.g. dead).")] = None,
           as_json: JsonOpt = False) -> None:
    """Send deliveries again: they become pending, due now (the next `billing worker` outbox
    run delivers them; the same webhook-id, so receivers dedupe)."""
    from billing.alerts import deliveries
    from billing.store.types import to_us

    if not event and since is None:
        fail("name the events to replay (--event ID ...) or a time (--since)")
    if status is not None and status not in ("pending", "delivered", "dead", "canceled"):
        fail("--status must be one of: pending, delivered, dead, canceled")
    if endpoint is not None and endpoint != deliveries.ENV:
        run(lambda: _endpoints().get(endpoint))
    since_us = None if since is None else to_us(instant(since, "--since"))
    count = deliveries.replay(engine(), to_us(datetime.now(UTC)), events=event or (), since_us=since_us,
                              endpoint=endpoint, status=status, env=endpoint == deliveries.ENV)
    if as_json:
        print_json({"replayed": count})
        return
    console.print(f"replayed {count} deliver{'y' if count == 1 else 'ies'}", highlight=False)
