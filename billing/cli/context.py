"""Shared CLI plumbing: settings -> engine, catalog, services; instants; errors."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

from typing import Any

import typer
from rich.markup import escape

from billing.catalog import Catalog, PlanInvalid
from billing.cli.render import err_console, print_json
from billing.config import get_settings
from billing.errors import BillingError
from billing.events import instant_problem


def fail(message: str, code: int = 2, *, error: str = "validation_error", param: str | None = None,
         details: Any = None) -> None:
    """Stop the command with exit ``code``: ``error: message`` on stderr or, under
    ``--json``, the API's error body on stdout (``error``: its stable code)."""
    if wants_json():
        from billing.api.errors import error_body

        print_json(error_body(error, message, details, param=param))
        raise typer.Exit(code)
    # the message is text, never markup: "[a-z0-9]" in a pattern or a "[/path]" must print as is
    err_console.print(f"[red]error[/red]: {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def fail_with(exc: BillingError, prefix: str = "") -> None:
    """``fail`` with a domain error: ``code: message`` on stderr, its code, param and
    details under ``--json``."""
    if wants_json():
        fail(prefix + exc.message, error=str(exc.code), param=exc.param, details=exc.details)
    fail(f"{prefix}{exc.code}: {exc.message}")


def _click_context():
    """The running command's click context (typer 0.2x vendors click as ``typer._click``)."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # typer on the click package
        from click import get_current_context
    return get_current_context(silent=True)


def wants_json() -> bool:
    """Was the running command given ``--json``?"""
    ctx = _click_context()
    while ctx is not None:
        if ctx.params.get("as_json"):
            return True
        ctx = ctx.parent
    return False


@lru_cache
def catalog() -> Catalog:
    try:
        return Catalog.from_paths(get_settings().plans_dir)
    except PlanInvalid as exc:
        fail("invalid plans\n" + "\n".join(str(p) for p in exc.problems))
        raise


def engine():
    """The ledger's engine, once its schema is known to be this code's (else the command
    stops with one line naming `billing db upgrade`)."""
    from billing.store.db import engine_for

    url = get_settings().database_url
    if url not in _migrated:
        from sqlalchemy.exc import SQLAlchemyError

        from billing.store.db import schema_problem

        try:
            problem = schema_problem(engine_for(url))
        except SQLAlchemyError as exc:
            fail(f"cannot reach the database (BILLING_DATABASE_URL): {type(exc).__name__}: "
                 f"{str(exc).splitlines()[0]}", error="service_unavailable")
        if problem:
            fail(problem, error="service_unavailable")
        _migrated.add(url)
    return engine_for(url)


_migrated: set[str] = set()  # URLs whose schema was found current by this process


def report_engine():
    """``engine()`` for a one-shot report process (``billing report margins``): on SQLite it
    reads through its bounded page cache rather than a memory map of the file, and sorts
    past the cache in temporary files: the report reads aggregates, and neither a map of the
    whole file nor an in-memory sort of its rows should make the process's resident memory
    grow with the ledger."""
    base = engine()
    if base.dialect.name != "sqlite":
        return base
    return _unmapped(base.url.render_as_string(hide_password=False))


@lru_cache
def _unmapped(url: str):
    from sqlalchemy import event

    from billing.store.db import make_engine

    unmapped = make_engine(url, sqlite_mmap=0)

    @event.listens_for(unmapped, "connect")
    def _temp_files(dbapi_conn, _record):  # after make_engine's pragmas (temp_store=MEMORY)
        dbapi_conn.execute("PRAGMA temp_store=FILE")

    return unmapped


def ledger_exists() -> bool:
    """Is there a ledger database to read (a SQLite file that exists; any PostgreSQL URL)?
    Commands that only read prices must not create an empty ``billing.db``."""
    from sqlalchemy.engine import make_url

    from billing.store.db import normalize_url

    url = make_url(normalize_url(get_settings().database_url))
    if url.get_backend_name() != "sqlite":
        return True
    return bool(url.database) and url.database != ":memory:" and Path(url.database).exists()


def cost_book(extra: list[Path] | None = None):
    """The command's cost book (``billing.store.cost_prices.cost_book``): shipped <
    ``BILLING_COSTS`` < prices added to the ledger (when there is one) < ``extra`` files."""
    from sqlalchemy.exc import SQLAlchemyError

    from billing.costs import CostBookError
    from billing.store.cost_prices import cost_book as build

    try:
        return build(engine() if ledger_exists() else None, extra=extra or ())
    except CostBookError as exc:
        fail(f"cost data: {exc.message}")
    except OSError as exc:
        fail(f"cost data: cannot read {exc.filename}: {exc.strerror}")
    except SQLAlchemyError as exc:
        fail(f"cannot read the prices added to the ledger (BILLING_DATABASE_URL): {type(exc).__name__}: "
             f"{str(exc).splitlines()[0]}")
    raise AssertionError("unreachable")


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
        fail_with(exc)
