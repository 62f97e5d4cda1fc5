"""`billing serve`: run the HTTP API with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer


def serve(host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
          workers: Annotated[int, typer.Option(help="Worker processes (each is a stateless server).")] = 1,
          log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
          log_format: Annotated[str, typer.Option(
              help="json: one JSON object per log line, each request's with its request id; or text.")] = "text",
          webhook_url: Annotated[str | None, typer.Option(
              envvar="BILLING_WEBHOOK_URL", help="Deliver budget-alert webhooks to this URL.")] = None,
          webhook_secret: Annotated[str | None, typer.Option(
              envvar="BILLING_WEBHOOK_SECRET", help="HMAC secret signing the webhooks.")] = None) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs) on BILLING_DATABASE_URL and BILLING_PLANS_DIR."""
    import os

    import uvicorn

    from billing.catalog import validate_paths
    from billing.cli.context import engine, fail
    from billing.config import get_settings

    _plans, problems = validate_paths([get_settings().plans_dir])  # a bad plan: a clear message, not a traceback
    if problems:
        fail("invalid plans (BILLING_PLANS_DIR)\n" + "\n".join(str(p) for p in problems))
    if log_format not in ("json", "text"):
        fail(f"--log-format: json or text, not {log_format!r}")
    engine()  # a database not migrated: one line naming `billing db upgrade`, before serving

    if webhook_url:
        os.environ["BILLING_WEBHOOK_URL"] = webhook_url
    if webhook_secret:
        os.environ["BILLING_WEBHOOK_SECRET"] = webhook_secret
    from billing.api.telemetry import log_config

    uvicorn.run("billing.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, log_config=log_config(log_format, log_level))
