"""What the webhooks carry: the event types, the envelope, and the one way to queue an event
in the outbox inside the caller's transaction (so the event exists exactly when the change
it reports committed).

Every webhook body is ``{"id", "type", "timestamp", "customer", "data"}``: ``id`` is also the
``webhook-id`` header (the same on every retry: receivers dedupe on it), ``timestamp`` is
when the change happened (ISO 8601, UTC), ``data`` the object that changed.

``enqueue_alert`` is the one door for ``alert.triggered``: callers name the rule and the
crossing's key (period or window start, subject, threshold...). The key makes the message id,
so the same crossing queued twice (two servers, a retry) is one webhook: an alert fires once
per crossing, never once per event.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from billing.alerts.outbox import Outbox
from billing.store.types import to_us

EVENT_TYPES = (
    "alert.triggered", "credit_note.created", "invoice.finalized", "invoice.paid", "invoice.payment_mismatch",
    "invoice.voided", "quota.exhausted", "subscription.canceled", "subscription.created", "subscription.updated",
)
ALERT_RULES = ("threshold", "cost_guard", "forecast", "whale", "task_guard", "budget")
MAX_ID = 200


def message_id(text: str) -> str:
    """``text`` when it fits the outbox's id column, else a stable digest of it."""
    if len(text) <= MAX_ID:
        return text
    return text[:120] + ":" + hashlib.sha256(text.encode()).hexdigest()


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def envelope(msg_id: str, type_: str, customer: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {"id": msg_id, "type": type_, "timestamp": iso(at), "customer": customer, "data": data}


def enqueue_event(conn: Connection, type_: str, key: str, customer: str, data: dict[str, Any],
                  at: datetime) -> bool:
    """Queue one ``type_`` webhook in ``conn``'s transaction; ``key`` identifies the change
    (message id ``<type>:<key>``). Returns False when that message was queued already."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {type_!r}")
    msg_id = message_id(f"{type_}:{key}")
    return Outbox.enqueue(conn, msg_id, customer, type_, envelope(msg_id, type_, customer, at, data), to_us(at))


def enqueue_alert(conn: Connection, *, customer: str, rule: str, key: str, data: dict[str, Any],
                  at: datetime) -> bool:
    """Queue one ``alert.triggered`` webhook for a crossing, in ``conn``'s transaction.

    ``rule``: threshold | cost_guard | forecast | whale | task_guard | budget. ``key``
    identifies the crossing (e.g. ``"<budget id>:<window start us>:80"``): queuing the same
    (rule, customer, key) again does nothing and returns False, so callers may call this on
    every write past the limit. ``data`` (JSON-ready: Decimals as strings) describes it;
    ``rule`` is added to it."""
    if rule not in ALERT_RULES:
        raise ValueError(f"unknown alert rule {rule!r}; the rules are {', '.join(ALERT_RULES)}")
    msg_id = message_id(f"alert:{rule}:{customer}:{key}")
    body = envelope(msg_id, "alert.triggered", customer, at, {"rule": rule, **data})
    return Outbox.enqueue(conn, msg_id, customer, "alert.triggered", body, to_us(at))


def enqueue_events(conn: Connection, items: list[tuple[str, str, str, dict[str, Any]]], at: datetime) -> int:
    """``enqueue_event`` for many changes of one transaction at once (a close's invoices):
    ``items`` are (type, key, customer, data), written in message-id order; returns how many
    were new."""
    from sqlalchemy.dialects import postgresql as pg_dialect
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from billing.store.operational_models import WebhookOutbox

    if not items:
        return 0
    table = WebhookOutbox.__table__
    at_us = to_us(at)
    rows = []
    for type_, key, customer, data in items:
        if type_ not in EVENT_TYPES:
            raise ValueError(f"unknown webhook event type {type_!r}")
        msg_id = message_id(f"{type_}:{key}")
        rows.append({"dedupe_id": msg_id, "customer_id": customer, "type": type_, "status": "pending", "attempts": 0,
                     "payload": json.dumps(envelope(msg_id, type_, customer, at, data), default=str),
                     "next_attempt_at": at_us, "created_at": at_us})
    rows.sort(key=lambda r: r["dedupe_id"])
    mod = pg_dialect if conn.dialect.name == "postgresql" else sqlite_dialect
    new = 0
    for start in range(0, len(rows), 500):
        new += len(conn.execute(mod.insert(table).values(rows[start:start + 500]).on_conflict_do_nothing()
                                .returning(table.c.id)).all())
    return new
