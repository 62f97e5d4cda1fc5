"""What each worker job does over one database. Each job returns a JSON-ready dict of
counts; the runner adds the job name, its status and its time.

- ``partitions``: PostgreSQL's monthly ``usage_event`` partitions for the previous, current
  and next three months (``billing.store.partitions``; nothing to do on SQLite).
- ``close``: ``Invoicing.close(as_of = now - close_grace_seconds)`` (idempotent; the close
  takes the ledger's close lock itself).
- ``outbox``: one pass of the webhook dispatcher: fan-out of new events to the endpoints
  (``billing webhooks``, plus ``BILLING_WEBHOOK_URL`` as the implicit ``env`` one), then
  delivery of the due ones.
- ``alerts``: forecast alerts (``billing.alerts.forecast``: the run rate exhausts a budget
  before the period ends), queued once per customer, period and subject; each run looks at
  the customers changed since the last (``billing.alerts.forecast_marks``); and the soft scoped
  budgets of every customer that has one, passed budgets alerting once per window
  (``BudgetAlerts.evaluate_budgets``: a sweep behind the ingestion doors' own evaluation).
- ``purge_holds``: marks holds expired over a day ago as ``expired`` (housekeeping).
- ``stripe_sync``: pushes finalized invoices and voids to Stripe (needs
  ``BILLING_STRIPE_API_KEY``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from billing.catalog import Catalog
from billing.config import Settings


@dataclass
class JobContext:
    """What the jobs share: the database, the plans, the settings, the clock, and the
    services they build once (``cached``)."""

    engine: Engine
    catalog: Catalog
    settings: Settings
    webhook_url: str | None = None
    webhook_secret: str | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    _services: dict[str, Any] = field(default_factory=dict)

    def cached(self, name: str, build: Callable[[], Any]) -> Any:
        if name not in self._services:
            self._services[name] = build()
        return self._services[name]

    def close(self) -> None:
        quota = self._services.pop("quota", None)
        if quota is not None:
            quota.close()
        dispatcher = self._services.pop("dispatcher", None)
        if dispatcher is not None:
            dispatcher.client.close()
        self._services.clear()


def partitions_job(ctx: JobContext) -> dict:
    from billing.store.partitions import ensure_ahead

    return ensure_ahead(ctx.engine, ctx.clock())


def close_job(ctx: JobContext) -> dict:
    from billing.invoicing.service import Invoicing

    invoicing = ctx.cached("invoicing", lambda: Invoicing(
        ctx.engine, ctx.catalog, clock=ctx.clock, future_tolerance_seconds=ctx.settings.future_tolerance_seconds))
    as_of = ctx.clock() - timedelta(seconds=ctx.settings.close_grace_seconds)
    result = invoicing.close(as_of)
    return {"as_of": as_of.isoformat(), "invoices": len(result.invoices), "credit_notes": len(result.credit_notes),
            "adjusted_periods": result.adjusted_periods}


def outbox_job(ctx: JobContext) -> dict:
    from billing.alerts.delivery import WebhookDispatcher
    from billing.alerts.outbox import Outbox

    dispatcher = ctx.cached("dispatcher", lambda: WebhookDispatcher(
        Outbox(ctx.engine, clock=ctx.clock), ctx.webhook_url, ctx.webhook_secret))
    return dispatcher.run_once()


def alerts_job(ctx: JobContext) -> dict:
    from billing.alerts.budget import BudgetAlerts
    from billing.alerts.forecast import forecast_alerts

    out = forecast_alerts(ctx.engine, ctx.catalog, ctx.clock())
    # the sweep behind ingestion's own evaluation: every customer with a soft budget (one
    # created past what was used, usage a door recorded without alerts) alerts once a window
    alerts = ctx.cached("budget_alerts", lambda: BudgetAlerts(ctx.engine, ctx.catalog, ctx.clock))
    customers = sorted(alerts.soft_customers(fresh=True))
    crossed = 0
    for i in range(0, len(customers), 500):
        crossed += len(alerts.evaluate_budgets(customers[i:i + 500]))
    return {**out, "soft_budget_customers": len(customers), "budget_alerts": crossed}


def purge_holds_job(ctx: JobContext) -> dict:
    from billing.reservations.holds import Quota

    quota = ctx.cached("quota", lambda: Quota(ctx.engine, ctx.catalog, clock=ctx.clock, alerts=False))
    return {"expired": quota.purge_expired()}


def stripe_sync_job(ctx: JobContext) -> dict:
    from billing.stripe_sync.client import make_client
    from billing.stripe_sync.sync import StripeSync

    sync = ctx.cached("stripe", lambda: StripeSync(ctx.engine, make_client(ctx.settings), clock=ctx.clock))
    result = sync.push()
    return {"ok": result.ok, **result.to_json()["counts"]}


JOBS: dict[str, Callable[[JobContext], dict]] = {
    "partitions": partitions_job, "close": close_job, "alerts": alerts_job, "outbox": outbox_job,
    "purge_holds": purge_holds_job, "stripe_sync": stripe_sync_job}


def unavailable(ctx: JobContext, name: str) -> str | None:
    """Why the job cannot run with this configuration (None: it can)."""
    if name == "outbox" and bool(ctx.webhook_url) != bool(ctx.webhook_secret):
        return "BILLING_WEBHOOK_URL and BILLING_WEBHOOK_SECRET go together (or --webhook-url / --webhook-secret)"
    if name == "stripe_sync":
        key = ctx.settings.stripe_api_key
        if key is None or not key.get_secret_value().strip():
            return "needs BILLING_STRIPE_API_KEY"
    return None
