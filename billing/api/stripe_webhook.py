"""Stripe payment webhooks over HTTP: ``router`` serving ``POST /v1/stripe/webhook``.

The signature is checked here; what a verified event does is ``billing.stripe_sync.webhooks``.
Dependencies are overridable for tests and other apps: ``get_engine`` (default: the app's
engine, else ``BILLING_DATABASE_URL``) and ``get_webhook_secret`` (default:
``BILLING_STRIPE_WEBHOOK_SECRET``).
"""

from __future__ import annotations

import json

import stripe
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from billing.api.errors import error_response
from billing.api.responses import StripeWebhookOut, documented
from billing.config import get_settings
from billing.errors import ErrorCode
from billing.stripe_sync.webhooks import handle_event, payload_problem

router = APIRouter(tags=["stripe"])


def get_engine(request: Request) -> Engine:
    """The app's engine; a bare app without services (tests) uses ``BILLING_DATABASE_URL``."""
    services = getattr(request.app.state, "services", None)
    if services is not None:
        return services.engine
    from billing.store.db import engine_for

    return engine_for(get_settings().database_url)


def get_webhook_secret() -> str | None:
    secret = get_settings().stripe_webhook_secret
    return secret.get_secret_value() if secret is not None else None


def _error(request: Request, code: ErrorCode, message: str, param: str | None = None) -> JSONResponse:
    return error_response(str(code), message, param=param, scope=request.scope)


@router.post("/v1/stripe/webhook", summary="Receive Stripe events (signed)",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "type": "object", "description": "A Stripe event, signed in the Stripe-Signature header",
                 "properties": {"id": {"type": "string"}, "type": {"type": "string"}, "data": {"type": "object"}}},
                 "example": {"id": "evt_1", "type": "invoice.paid", "data": {"object": {"id": "in_1"}}}}}}},
             **documented(StripeWebhookOut, ErrorCode.INVALID_SIGNATURE, ErrorCode.INVALID_PAYLOAD,
                          ErrorCode.WEBHOOK_NOT_CONFIGURED))
async def stripe_webhook(request: Request, engine: Engine = Depends(get_engine),
                         secret: str | None = Depends(get_webhook_secret)):
    if not secret:
        return _error(request, ErrorCode.WEBHOOK_NOT_CONFIGURED, "BILLING_STRIPE_WEBHOOK_SECRET is not set")
    payload = await request.body()
    header = request.headers.get("stripe-signature")
    if not header:
        return _error(request, ErrorCode.INVALID_SIGNATURE, "missing Stripe-Signature header", "Stripe-Signature")
    try:
        # verify only: the event is parsed below as plain JSON (construct_event fails with
        # TypeError/AttributeError on signed payloads that are JSON but not objects)
        stripe.WebhookSignature.verify_header(payload.decode("utf-8"), header, secret,
                                              stripe.Webhook.DEFAULT_TOLERANCE)
    except UnicodeDecodeError:
        return _error(request, ErrorCode.INVALID_PAYLOAD, "the payload is not UTF-8")
    except stripe.SignatureVerificationError:
        return _error(request, ErrorCode.INVALID_SIGNATURE, "the Stripe-Signature header does not match the payload "
                      "(or its timestamp is outside the tolerance)", "Stripe-Signature")
    try:
        data = json.loads(payload)
    except ValueError:
        data = None
    problem = payload_problem(data)
    if problem:
        return _error(request, ErrorCode.INVALID_PAYLOAD, problem)
    result = await run_in_threadpool(handle_event, engine, data)
    return {"received": True, "id": data.get("id"), "type": data.get("type"), **result}
