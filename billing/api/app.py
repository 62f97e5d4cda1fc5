"""The HTTP API: ``create_app(engine=None, catalog=None)``; OpenAPI docs at ``/docs``.

Servers are stateless: every authoritative counter lives in the database, so any number
of them can run behind a load balancer on one PostgreSQL. Run with ``billing serve``.

Every route is in ``billing.api``; pass more routers with ``extra_routers``.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from billing.api import errors, events_read, idempotency, openapi, reports, stripe_webhook, telemetry
from billing.api.async_events import close_event_log
from billing.api.auth import KeyStore
from billing.api.checks import AsyncChecks
from billing.api.entitlements import router as entitlements_router
from billing.api.fastpath import BillingAPI
from billing.api.keys import router as keys_router
from billing.api.media import JsonBodies
from billing.api.budgets import router as budgets_router
from billing.api.params import reject_unknown_query
from billing.api.responses import Health, documented
from billing.api.contracts import router as contracts_router
from billing.api.metering import router as metering_router
from billing.api.metrics import router as metrics_router
from billing.api.routes import quota_check_fast, router
from billing.catalog import Catalog
from billing.invoicing.service import Invoicing
from billing.ledger.accounts import Accounts
from billing.reservations.holds import Outbox, Quota
from billing.ledger.ingest import Ledger

log = logging.getLogger("billing.api")


@dataclass
class Services:
    engine: Engine
    catalog: Catalog
    ledger: Ledger
    quota: Quota
    accounts: Accounts
    invoicing: Invoicing
    clock: Callable[[], datetime]


def create_app(engine: Engine | None = None, catalog: Catalog | None = None, *,
               clock: Callable[[], datetime] | None = None, context_ttl: float = 1.0,
               key_cache_ttl: float | None = None, max_request_bytes: int | None = None,
               extra_routers: Iterable[APIRouter] = (),
               webhook_url: str | None = None, webhook_secret: str | None = None) -> FastAPI:
    """The FastAPI app over ``engine`` (default: ``BILLING_DATABASE_URL``) and ``catalog``
    (default: the plans in ``BILLING_PLANS_DIR``).

    ``webhook_url`` / ``webhook_secret`` (default: ``BILLING_WEBHOOK_URL`` /
    ``BILLING_WEBHOOK_SECRET``): when both are set, a background thread delivers the webhook
    outbox (budget alerts) to that URL while the app runs.

    ``context_ttl``: seconds a customer's plan/period/seats/credits stay cached by quota
    decisions (usage, holds and rate windows are always read fresh); 0 disables.

    ``key_cache_ttl`` (default ``BILLING_KEY_CACHE_SECONDS``): seconds a looked-up API key is
    trusted; ``max_request_bytes`` (default ``BILLING_MAX_REQUEST_BYTES``): the request-size
    limit of every route (``billing.api.limits``)."""
    from billing.config import get_settings

    settings = get_settings()
    if engine is None:
        from billing.store.db import engine_for

        engine = engine_for(settings.database_url)
    if catalog is None:
        catalog = Catalog.from_paths(settings.plans_dir)
    clock = clock or (lambda: datetime.now(UTC))
    ledger = Ledger(engine, catalog, clock=clock, future_tolerance_seconds=settings.future_tolerance_seconds)
    services = Services(engine, catalog, ledger,
                        Quota(engine, catalog, ledger, clock=clock, context_ttl=context_ttl),
                        Accounts(engine, catalog),
                        Invoicing(engine, catalog, clock=clock,
                                  future_tolerance_seconds=settings.future_tolerance_seconds), clock)

    webhook_url = webhook_url or os.environ.get("BILLING_WEBHOOK_URL")
    webhook_secret = webhook_secret or os.environ.get("BILLING_WEBHOOK_SECRET")

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        # everything loaded so far (plans, cost book, models, code) lives as long as the
        # server: keep it out of the collector's generations, so collections stay short
        # and do not show up as tail latency on the hot path
        gc.freeze()
        stop = threading.Event()
        thread = None
        if webhook_url and webhook_secret:
            from billing.api.outbox import WebhookDispatcher

            dispatcher = WebhookDispatcher(Outbox(engine, clock=clock), webhook_url, webhook_secret)
            thread = threading.Thread(target=dispatcher.run_forever, args=(stop,), name="billing-webhooks",
                                      daemon=True)
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                thread.join(10)
            services.quota.close()
            close_event_log(_app)

    app = BillingAPI(lifespan=lifespan, title="AI billing engine", version="0.1.0",
                  description="Usage events, quota decisions (check / reserve / commit / release), customers, "
                              "subscriptions, invoices and plans. Authenticate with `Authorization: Bearer <key>` "
                              "(create keys with `billing keys create`). Errors are Stripe's shape: "
                              "`{\"error\": {\"type\", \"code\", \"message\", \"param\", \"request_id\"}}`.",
                  dependencies=[Depends(reject_unknown_query)])  # 400 parameter_unknown (billing.api.params)
    app.state.services = services
    app.state.checks = AsyncChecks(services.quota) if not services.quota.inline_reads else None
    app.state.keys = KeyStore(engine, ttl=settings.key_cache_seconds if key_cache_ttl is None else key_cache_ttl)
    app.max_request_bytes = settings.max_request_bytes if max_request_bytes is None else max_request_bytes
    app.max_body = min(app.max_body, app.max_request_bytes)  # the fast path's own, smaller limit
    errors.install(app)

    app.get("/healthz", tags=["meta"], summary="Liveness (no authentication, no database)",
            **documented(Health))(healthz)
    app.include_router(router)
    # the lists (cursor pages) and the writes of the CLI's subscriptions, credits and invoice commands
    from billing.api import credits, customers, events_list, invoices_routes, subscriptions

    for module in (customers, subscriptions, credits, invoices_routes, events_list):
        app.include_router(module.router)
    app.include_router(metering_router)  # GET /v1/customers/{id}/metering (billing.api.metering)
    app.include_router(entitlements_router)  # POST /v1/entitlements/check (billing.api.entitlements)
    app.include_router(events_read.router)
    app.include_router(metrics_router)
    app.include_router(keys_router)
    from billing.api.formats_routes import router as formats_router

    app.include_router(formats_router)  # POST /v1/otlp/v1/traces (CloudEvents: POST /v1/events)
    # the hottest requests skip FastAPI's stack (same handlers, same errors)
    from billing.api.holds_fast import ROUTES as HOLD_ROUTES, SYNC as HOLD_SYNC

    app.fast_routes = {("GET", "/healthz"): healthz_fast, ("POST", "/v1/quota/check"): quota_check_fast,
                       **HOLD_ROUTES}  # reserve, commit, release (billing.api.holds_fast)
    app.fast_sync = HOLD_SYNC
    # in front of every route, the fast path too: JSON bodies only, then Idempotency-Key records
    idempotency.install(app, engine, clock, retention=timedelta(hours=settings.idempotency_retention_hours),
                        lease=settings.idempotency_lease_seconds)
    app.add_layer(JsonBodies)

    app.include_router(stripe_webhook.router)  # POST /v1/stripe/webhook
    app.include_router(reports.router)  # GET /reports/margins
    app.include_router(contracts_router)  # /v1/subscriptions/{id}/contract, overrides, coupons, commitments
    from billing.api.webhook_endpoints import router as webhooks_router

    app.include_router(webhooks_router)  # /v1/webhook_endpoints, /v1/webhook_deliveries
    app.state.webhook_env = bool(webhook_url and webhook_secret)  # the implicit "env" endpoint
    app.include_router(budgets_router)  # /v1/customers/{id}/budgets (billing.api.budgets)
    telemetry.install(app, Outbox(engine, clock=clock))  # X-Request-Id on every response, GET /metrics
    for extra in extra_routers:
        app.include_router(extra)
    openapi.install(app)  # security schemes, shared error answers, the event schema (billing.api.openapi)
    return app


async def healthz(request: Request) -> JSONResponse:  # on the event loop: no thread hop
    return JSONResponse({"status": "ok"})


async def healthz_fast(_app: FastAPI, _scope: dict, _body: bytes) -> tuple[int, bytes, list]:
    """``healthz`` for ``billing.api.fastpath``."""
    return 200, b'{"status":"ok"}', []

