"""Stripe payment webhooks: ``POST /v1/stripe/webhook``.

Mount ``router`` on the main app. Dependencies are overridable for tests and other apps:
``get_engine`` (default: ``BILLING_DATABASE_URL``) and ``get_webhook_secret`` (default:
``BILLING_STRIPE_WEBHOOK_SECRET``), e.g. ``app.dependency_overrides[get_engine] = lambda: engine``.

- The signature is verified with ``stripe.Webhook.construct_event`` (5 min tolerance). A bad
  or missing signature is ``400 {"code": "invalid_signature", ...}`` and changes nothing.
- ``invoice.paid`` / ``invoice.payment_succeeded``: our invoice becomes ``paid``.
- ``invoice.payment_failed``: ``payment_failed_at`` is set (past due; the first failure
  starts the dunning clock, see ``dunning.is_payment_overdue``).
- The invoice is found by ``stripe_invoice_id``, else by ``metadata.billing_invoice_id``
  (a payment can arrive before our sync stored the id).
- Replays and out-of-order deliveries are harmless: transitions are conditional updates
  (paid stays paid, a late ``payment_failed`` after ``paid`` is ignored, void stays void),
  so no table of processed event ids is needed.
- Unknown event types and invoices that are not ours: 200, ignored (Stripe stops retrying).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import stripe
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from billing.config import get_settings
from billing.stripe_sync import state
from billing.stripe_sync.sync import META_INVOICE

router = APIRouter(tags=["stripe"])

PAID_EVENTS = {"invoice.paid", "invoice.payment_succeeded"}
FAILED_EVENTS = {"invoice.payment_failed"}


def get_engine() -> Engine:
    from billing.ledger.db import engine_for

    return engine_for(get_settings().database_url)


def get_webhook_secret() -> str | None:
    secret = get_settings().stripe_webhook_secret
    return secret.get_secret_value() if secret is not None else None


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"code": code, "message": message})


@router.post("/v1/stripe/webhook", summary="Receive Stripe events (signed)")
async def stripe_webhook(request: Request, engine: Engine = Depends(get_engine),
                         secret: str | None = Depends(get_webhook_secret)):
    if not secret:
        return _error(503, "webhook_not_configured", "BILLING_STRIPE_WEBHOOK_SECRET is not set")
    payload = await request.body()
    header = request.headers.get("stripe-signature")
    if not header:
        return _error(400, "invalid_signature", "missing Stripe-Signature header")
    try:
        event = stripe.Webhook.construct_event(payload, header, secret)
    except stripe.SignatureVerificationError:
        return _error(400, "invalid_signature", "the Stripe-Signature header does not match the payload")
    except ValueError:
        return _error(400, "invalid_payload", "the payload is not a JSON event")
    data = json.loads(payload)  # plain dicts (verified above)
    result = await run_in_threadpool(handle_event, engine, data)
    return {"received": True, "id": data.get("id"), "type": data.get("type"), **result}


def _find_invoice_id(engine: Engine, obj: dict) -> int | None:
    sid = obj.get("id")
    if sid:
        inv = state.find_by_stripe_id(engine, sid)
        if inv is not None:
            return inv.id
    meta = obj.get("metadata") or {}
    try:
        invoice_id = int(meta.get(META_INVOICE))
    except (TypeError, ValueError):
        return None
    inv = state.get_invoice(engine, invoice_id)
    if inv is None or (inv.stripe_invoice_id and inv.stripe_invoice_id != sid):
        return None  # metadata of a stale or foreign Stripe invoice
    return inv.id


def _ts(value) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(value), UTC) if value else None
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def handle_event(engine: Engine, event: dict) -> dict:
    """Apply one verified event; returns what happened (for the response and logs)."""
    kind = event.get("type")
    if kind not in PAID_EVENTS | FAILED_EVENTS:
        return {"handled": False, "result": "ignored", "reason": "event type not used"}
    obj = (event.get("data") or {}).get("object") or {}
    if obj.get("object") not in (None, "invoice"):
        return {"handled": False, "result": "ignored", "reason": "not an invoice"}
    invoice_id = _find_invoice_id(engine, obj)
    if invoice_id is None:
        return {"handled": False, "result": "ignored", "reason": "invoice not known here"}
    created = _ts(event.get("created")) or datetime.now(UTC)
    if kind in PAID_EVENTS:
        paid_at = _ts((obj.get("status_transitions") or {}).get("paid_at")) or created
        t = state.mark_paid(engine, invoice_id, paid_at)
    else:
        t = state.mark_payment_failed(engine, invoice_id, created)
    return {"handled": True, "invoice_id": invoice_id, "changed": t.changed, "status": t.status,
            "result": "changed" if t.changed else "unchanged", "note": t.note}
