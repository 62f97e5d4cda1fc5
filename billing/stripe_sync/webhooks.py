"""Stripe payment webhooks: what a verified event does (``handle_event``), and which signed
payloads are not events of the expected shape (``payload_problem``). The route,
``POST /v1/stripe/webhook``, is ``billing.api.stripe_webhook``.

- The signature is verified with ``stripe.WebhookSignature.verify_header`` (5 min tolerance). A bad
  or missing signature is ``400 {"code": "invalid_signature", ...}`` and changes nothing.
- ``invoice.paid`` / ``invoice.payment_succeeded``: our invoice becomes ``paid`` when the
  event's ``total`` and ``currency`` are the invoice's (its total in Stripe's units of the
  currency, ``billing.stripe_sync.amounts``). Otherwise (another amount, another currency,
  either missing) the invoice is NOT marked paid: the answer is 200 ``result: "mismatch"``
  with both amounts (Stripe's retries would carry the same figures), a warning is logged,
  and an ``invoice.payment_mismatch`` event is queued in the webhook outbox (once per
  invoice and received amount) for the operator, who settles it in Stripe or marks the
  invoice paid by hand (``billing invoice pay``); ``billing stripe reconcile`` lists the
  difference too.
- ``invoice.payment_failed``: ``payment_failed_at`` is set (past due; the first failure
  starts the dunning clock: quota decisions deny with ``payment_overdue`` after the plan's
  ``dunning.deny_after_days``).
- The invoice is found by ``stripe_invoice_id``, else by ``metadata.billing_invoice_id``
  (a payment can arrive before our sync stored the id).
- Replays and out-of-order deliveries are harmless: transitions go through the one invoice
  lifecycle (``billing.invoicing.lifecycle``: conditional updates; paid stays paid, a late
  ``payment_failed`` after ``paid`` is ignored, void stays void), so no table of processed
  event ids is needed. A transition the lifecycle refuses is answered 200 ``unchanged``
  with the reason.
- Unknown event types and invoices that are not ours: 200, ignored (Stripe stops retrying).
- A correctly signed payload that is not an event of the expected shape (not a JSON object,
  ``data.object`` not an object, ...) is ``400 {"code": "invalid_payload"}``, never a 500.
- Only invoices (``kind=invoice``) are marked paid or past due, never credit notes.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import Engine

from billing.errors import BillingError, ErrorCode
from billing.invoicing import lifecycle
from billing.invoicing.lifecycle import Action, DocumentKind, InvoiceStatus
from billing.ledger.accounts import MAX_ROW_ID
from billing.stripe_sync import state
from billing.stripe_sync.amounts import NotRepresentable, total_to_stripe
from billing.stripe_sync.sync import META_INVOICE

log = logging.getLogger("billing.stripe")

PAID_EVENTS = {"invoice.paid", "invoice.payment_succeeded"}
FAILED_EVENTS = {"invoice.payment_failed"}
MAX_INVOICE_ID = MAX_ROW_ID  # invoice.id is a 32-bit INTEGER


def payload_problem(event) -> str | None:
    """Why a (verified) payload is not an event we can read, or None."""
    if not isinstance(event, dict):
        return "the payload is not a JSON object"
    if not isinstance(event.get("type", ""), str) or not isinstance(event.get("id", ""), (str, type(None))):
        return "type and id must be strings"
    data = event.get("data")
    if data is None and event.get("type") not in PAID_EVENTS | FAILED_EVENTS:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        return "data.object must be an object"
    obj = data["object"]
    for key, kind in (("id", str), ("metadata", dict), ("status_transitions", dict), ("object", str)):
        if obj.get(key) is not None and not isinstance(obj[key], kind):
            return f"data.object.{key} has the wrong type"
    return None


def _find_invoice_id(engine: Engine, obj: dict) -> int | None:
    sid = obj.get("id")
    if sid:
        inv = state.find_by_stripe_id(engine, sid)
        if inv is not None:
            return inv.id
    meta = obj.get("metadata") or {}
    text = meta.get(META_INVOICE)
    if not isinstance(text, str) or not text.isdigit() or not 1 <= int(text) <= MAX_INVOICE_ID:
        return None
    inv = state.get_invoice(engine, int(text))
    if inv is None or (inv.stripe_invoice_id and inv.stripe_invoice_id != sid):
        return None  # metadata of a stale or foreign Stripe invoice
    return inv.id


def _ts(value) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None  # Stripe timestamps are integer seconds
    try:
        return datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError):
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
        inv = state.get_invoice(engine, invoice_id)
        payable = inv.status == InvoiceStatus.FINALIZED and inv.kind == DocumentKind.INVOICE
        mismatch = payment_mismatch(inv, obj) if payable else None
        if mismatch is not None:  # (paid, void and credit notes stay as they are, whatever the amount)
            return _mismatch(engine, invoice_id, event, mismatch, created)
        paid_at = _ts((obj.get("status_transitions") or {}).get("paid_at")) or created
        return _apply(engine, invoice_id, Action.PAY, paid_at)
    return _apply(engine, invoice_id, Action.PAYMENT_FAILED, created)


def _apply(engine: Engine, invoice_id: int, action: Action, at: datetime) -> dict:
    """The lifecycle's answer as the webhook's: a refused transition is answered (Stripe
    must not retry it) as ``unchanged`` with the reason."""
    try:
        t = lifecycle.apply(engine, invoice_id, action, at)
    except BillingError as exc:
        if exc.code != ErrorCode.INVALID_TRANSITION:
            raise
        return {"handled": True, "invoice_id": invoice_id, "changed": False, "status": exc.details["status"],
                "result": "unchanged", "note": f"not changed: {exc.message}"}
    note = "" if t.changed else f"already {t.invoice.status}"
    return {"handled": True, "invoice_id": invoice_id, "changed": t.changed, "status": t.invoice.status,
            "result": "changed" if t.changed else "unchanged", "note": note}


def payment_mismatch(inv, obj: dict) -> dict | None:
    """What differs between our invoice and the amount and currency Stripe says were paid,
    or None when they agree."""
    expected_currency = inv.currency.lower()
    try:
        expected_total = total_to_stripe(inv.total_minor, inv.currency)
    except NotRepresentable:
        expected_total = None  # never pushed as such: nothing Stripe reports can match it
    total, currency = obj.get("total"), obj.get("currency")
    if (isinstance(total, int) and not isinstance(total, bool) and total == expected_total
            and isinstance(currency, str) and currency.lower() == expected_currency):
        return None
    return {"invoice_id": inv.id, "number": inv.number, "expected_total": expected_total,
            "expected_currency": expected_currency, "received_total": total if isinstance(total, int) else None,
            "received_currency": currency if isinstance(currency, str) else None}


def _mismatch(engine: Engine, invoice_id: int, event: dict, details: dict, at: datetime) -> dict:
    inv = state.get_invoice(engine, invoice_id)
    details = {**details, "stripe_event_id": event.get("id"), "stripe_invoice_id": inv.stripe_invoice_id}
    queued = state.record_payment_mismatch(engine, inv, details, at)
    log.warning("Stripe reported invoice %s paid with %s %s; it totals %s %s: not marked paid", invoice_id,
                details["received_total"], details["received_currency"], details["expected_total"],
                details["expected_currency"])
    note = (f"not marked paid: Stripe reports {details['received_total']} {details['received_currency']}, "
            f"the invoice totals {details['expected_total']} {details['expected_currency']} (in Stripe's units)")
    return {"handled": True, "invoice_id": invoice_id, "changed": False, "status": inv.status,
            "result": "mismatch", "note": note, "recorded": queued}
