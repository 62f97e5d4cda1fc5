"""The lifecycle webhooks, queued by the services in the transaction of the change they
report (``billing.alerts.events``): ``invoice.finalized`` / ``credit_note.created`` (the
close writes documents finalized), ``invoice.paid`` / ``invoice.voided`` (a lifecycle
transition), ``subscription.created`` / ``updated`` (seats, plan) / ``canceled``.
Message ids are ``<type>:<document or subscription id>`` (a seat change: its own id), so a
repeated call queues nothing new."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from billing.alerts.events import enqueue_event, enqueue_events, iso
from billing.money import from_minor


def _when(t: datetime | None) -> str | None:
    return None if t is None else iso(t)


def invoice_data(doc: Any, invoice_id: int) -> dict[str, Any]:
    """The ``data`` of an invoice or credit note event (``doc``: a row or the dict written)."""
    get = doc.get if isinstance(doc, dict) else (lambda k: getattr(doc, k))
    name = "credit_note" if get("kind") == "credit_note" else "invoice"
    return {name: {"id": invoice_id, "number": get("number"), "kind": get("kind"), "status": get("status"),
                   "customer": get("customer_id"), "subscription_id": get("subscription_id"),
                   "currency": get("currency"), "total": f"{from_minor(get('total_minor'), get('currency')):f}",
                   "plan": {"id": get("plan_id"), "version": get("plan_version")},
                   "period": {"start": _when(get("period_start")), "end": _when(get("period_end"))},
                   **({"corrects_invoice_id": get("corrects_invoice_id")} if name == "credit_note" else {})}}


def documents_finalized(conn: Connection, docs: list[dict], ids: list[int], at: datetime) -> None:
    """A close wrote ``docs`` finalized: ``invoice.finalized`` / ``credit_note.created`` each."""
    enqueue_events(conn, [("credit_note.created" if doc["kind"] == "credit_note" else "invoice.finalized",
                           str(i), doc["customer_id"], invoice_data(doc, i)) for doc, i in zip(docs, ids)], at)


TRANSITION_TYPES = {("invoice", "finalized"): "invoice.finalized", ("invoice", "paid"): "invoice.paid",
                    ("invoice", "void"): "invoice.voided", ("credit_note", "finalized"): "credit_note.created"}


def document_moved(conn: Connection, row: Any, status: str, at: datetime) -> None:
    """A lifecycle transition moved ``row`` to ``status`` (those with a webhook: finalized,
    paid, void of an invoice; a credit note finalized)."""
    type_ = TRANSITION_TYPES.get((row.kind, status))
    if type_ is None:
        return
    data = invoice_data(row, row.id)
    data[next(iter(data))]["status"] = status
    enqueue_event(conn, type_, str(row.id), row.customer_id, data, at)


def subscription_data(sub: Any, **extra: Any) -> dict[str, Any]:
    return {"subscription": {"id": sub.id, "customer": sub.customer_id,
                             "plan": {"id": sub.plan_id, "version": sub.plan_version}, "status": sub.status,
                             "started_at": _when(sub.started_at), "ended_at": _when(sub.ended_at),
                             "previous_id": sub.previous_id}, **extra}


def subscription_changed(conn: Connection, type_: str, key: str, sub: Any, at: datetime, **extra: Any) -> None:
    enqueue_event(conn, type_, key, sub.customer_id, subscription_data(sub, **extra), at)
