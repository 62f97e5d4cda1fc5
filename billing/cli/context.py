"""Shared CLI plumbing: settings -> engine, catalog, services; instants; errors."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

import typer
from rich.markup import escape

from billing.catalog import Catalog, PlanInvalid
from billing.cli.render import err_console
from billing.config import get_settings
from billing.errors import BillingError
from billing.events import instant_problem


def fail(message: str, code: int = 2) -> None:
    # the message is text, never markup: "[a-z0-9]" in a pattern or a "[/path]" must print as is
    err_console.print(f"[red]error[/red]: {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@lru_cache
def catalog() -> Catalog:
    try:
        return Catalog.from_paths(get_settings().plans_dir)
    except PlanInvalid as exc:
        fail("invalid plans\n" + "\n".join(str(p) for p in exc.problems))
        raise


def engine():
    from billing.ledger.db import engine_for

    return engine_for(get_settings().database_url)


def instant(text: str | None, name: str = "time") -> datetime:
    """An ISO 8601 instant (timezone required); None -> now."""
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{name}: not an ISO 8601 instant: {text!r}")
    if value.tzinfo is None:
        fail(f"{name}: {text!r} needs a timezone, e.g. {text}Z")
    problem = instant_problem(value)
    if problem:
        fail(f"{name}: {text!r} {problem}")
    return value


def checked(check, *args):
    """``check(*args)`` (a validator of ``billing.ledger.accounts``): its value, or its
    message and exit code 2, as the API answers 422."""
    return run(lambda: check(*args))


def run(fn):
    """Call fn(); turn domain errors into a clean message and exit code 2."""
    try:
        return fn()
    except BillingError as exc:
        fail(f"{exc.code}: {exc.message}")
