"""Webhook deliveries: the fan-out of outbox events to endpoints, the claims of due
deliveries, the delivery log, and replays (the SQL behind ``billing.alerts.delivery``).

- ``fan_out``: each pending outbox event becomes one ``webhook_delivery`` row per enabled
  endpoint whose filter takes its type (plus the implicit ``env`` endpoint when the
  dispatcher has ``BILLING_WEBHOOK_URL``), in one transaction that marks the event
  ``dispatched``; the (event, endpoint) unique key makes a second fan-out a no-op.
- ``claim``: due pending deliveries leased by one statement (PostgreSQL: ``FOR UPDATE SKIP
  LOCKED``; SQLite writes one at a time), so two dispatchers never send the same row at once.
- ``finish``: the attempt's outcome and its log row, in one transaction.
- ``replay``: deliveries made pending again (attempts reset; the log keeps the history).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from billing.alerts.endpoints import matches
from billing.alerts.events import iso
from billing.store.operational_models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookOutbox
from billing.store.types import from_us

_out = WebhookOutbox.__table__
_del = WebhookDelivery.__table__
_att = WebhookAttempt.__table__
_ep = WebhookEndpoint.__table__
ENV = "env"  # the implicit endpoint of BILLING_WEBHOOK_URL


def _insert(conn: Connection):
    return (pg_dialect if conn.dialect.name == "postgresql" else sqlite_dialect).insert(_del)


def _targets(conn: Connection, env: bool) -> list[tuple[str, list[str]]]:
    rows = conn.execute(select(_ep.c.id, _ep.c.event_types).where(_ep.c.status == "enabled")
                        .order_by(_ep.c.id)).all()
    found = [(r.id, json.loads(r.event_types)) for r in rows]
    return sorted(found + ([(ENV, [])] if env else []))


def fan_out(engine: Engine, now_us: int, *, env: bool, limit: int = 500) -> int:
    """Turn up to ``limit`` pending outbox events into deliveries; returns the events done."""
    with engine.begin() as conn:
        pending = select(_out.c.id).where(_out.c.status == "pending").order_by(_out.c.id).limit(limit)
        if conn.dialect.name == "postgresql":  # rows locked in id order; another dispatcher's skipped
            pending = pending.with_for_update(skip_locked=True)
        ids = conn.execute(pending).scalars().all()
        if not ids:
            return 0
        taken = conn.execute(update(_out).where(_out.c.id.in_(ids), _out.c.status == "pending")
                             .values(status="dispatched", delivered_at=now_us)
                             .returning(_out.c.id, _out.c.type)).all()
        targets = _targets(conn, env)
        rows = [{"outbox_id": event_id, "endpoint_id": endpoint, "status": "pending", "attempts": 0,
                 "next_attempt_at": now_us, "created_at": now_us}
                for event_id, type_ in sorted(taken) for endpoint, types in targets if matches(types, type_)]
        for start in range(0, len(rows), 500):
            conn.execute(_insert(conn).values(rows[start:start + 500]).on_conflict_do_nothing())
    return len(taken)


def claim(engine: Engine, now_us: int, lease_us: int, limit: int, *, env: bool) -> list[dict[str, Any]]:
    """Lease up to ``limit`` due deliveries (``next_attempt_at`` moved to ``lease_us``) and
    return them with their event (message id, type, body)."""
    due = (select(_del.c.id).where(_del.c.status == "pending", _del.c.next_attempt_at <= now_us)
           .order_by(_del.c.next_attempt_at, _del.c.id).limit(limit))
    if not env:
        due = due.where(_del.c.endpoint_id != ENV)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        leased = conn.execute(update(_del).where(_del.c.id.in_(due.scalar_subquery()))
                              .values(next_attempt_at=lease_us).returning(_del.c.id)).scalars().all()
        if not leased:
            return []
        rows = conn.execute(select(_del, _out.c.dedupe_id, _out.c.type, _out.c.payload)
                            .join(_out, _out.c.id == _del.c.outbox_id)
                            .where(_del.c.id.in_(leased)).order_by(_del.c.id)).all()
    return [dict(r._mapping) for r in rows]


def finish(engine: Engine, delivery: dict[str, Any], *, at_us: int, ok: bool, status_code: int | None,
           error: str | None, took_ms: int, retry_at_us: int | None, final_status: str | None = None) -> None:
    """Record one attempt: delivered, rescheduled at ``retry_at_us``, or ``dead`` (None)."""
    attempt = delivery["attempts"] + 1
    values: dict[str, Any] = {"attempts": attempt, "last_status_code": status_code,
                              "last_error": None if ok else (error or "")[:500]}
    if ok:
        values.update(status="delivered", delivered_at=at_us)
    elif final_status is not None:
        values["status"] = final_status
    elif retry_at_us is None:
        values["status"] = "dead"
    else:
        values["next_attempt_at"] = retry_at_us
    with engine.begin() as conn:
        conn.execute(update(_del).where(_del.c.id == delivery["id"]).values(**values))
        conn.execute(insert(_att).values(delivery_id=delivery["id"], attempt=attempt, at=at_us,
                                         status_code=status_code, error=None if ok else (error or "")[:500],
                                         took_ms=took_ms))


def log(engine: Engine, *, endpoint: str | None = None, event: str | None = None, status: str | None = None,
        limit: int = 100, starting_after: int | None = None) -> tuple[list[dict[str, Any]], bool]:
    """Deliveries, newest first, each with its attempts; (page, has_more)."""
    query = (select(_del, _out.c.dedupe_id, _out.c.type).join(_out, _out.c.id == _del.c.outbox_id)
             .order_by(_del.c.id.desc()).limit(limit + 1))
    if endpoint is not None:
        query = query.where(_del.c.endpoint_id == endpoint)
    if event is not None:
        query = query.where(_out.c.dedupe_id == event)
    if status is not None:
        query = query.where(_del.c.status == status)
    if starting_after is not None:
        query = query.where(_del.c.id < starting_after)
    with engine.connect() as conn:
        rows = conn.execute(query).all()[:limit + 1]
        ids = [r.id for r in rows[:limit]]
        attempts: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        if ids:
            for a in conn.execute(select(_att).where(_att.c.delivery_id.in_(ids))
                                  .order_by(_att.c.delivery_id, _att.c.id)):
                attempts[a.delivery_id].append({"attempt": a.attempt, "at": iso(from_us(a.at)),
                                                "status_code": a.status_code, "error": a.error,
                                                "took_ms": a.took_ms})
    page = [{"id": r.id, "event_id": r.dedupe_id, "type": r.type, "endpoint": r.endpoint_id, "status": r.status,
             "attempts": r.attempts, "last_status_code": r.last_status_code, "last_error": r.last_error,
             "next_attempt_at": iso(from_us(r.next_attempt_at)) if r.status == "pending" else None,
             "created_at": iso(from_us(r.created_at)),
             "delivered_at": iso(from_us(r.delivered_at)) if r.delivered_at is not None else None,
             "log": attempts[r.id]} for r in rows[:limit]]
    return page, len(rows) > limit


def replay(engine: Engine, now_us: int, *, events: Iterable[str] = (), since_us: int | None = None,
           endpoint: str | None = None, status: str | None = None, env: bool = False) -> int:
    """Make deliveries pending again, due now, attempts reset: those of the given event ids
    (or of the events created at or after ``since_us``), of one endpoint or all, of one
    status or any. With ``endpoint``, an event that endpoint never got (created later, or
    filtered then) gets a delivery if the endpoint now takes its type. Returns the number
    of deliveries scheduled."""
    wanted = sorted(set(events))
    with engine.begin() as conn:
        query = select(_out.c.id, _out.c.type).where(_out.c.status == "dispatched").order_by(_out.c.id)
        if wanted:
            query = query.where(_out.c.dedupe_id.in_(wanted))
        if since_us is not None:
            query = query.where(_out.c.created_at >= since_us)
        found = conn.execute(query).all()
        if not found:
            return 0
        ids = [r.id for r in found]
        if endpoint is not None and status is None:
            targets = dict(_targets(conn, env))
            if endpoint in targets:
                rows = [{"outbox_id": r.id, "endpoint_id": endpoint, "status": "pending", "attempts": 0,
                         "next_attempt_at": now_us, "created_at": now_us}
                        for r in found if matches(targets[endpoint], r.type)]
                for start in range(0, len(rows), 500):
                    conn.execute(_insert(conn).values(rows[start:start + 500]).on_conflict_do_nothing())
        cond = [_del.c.outbox_id.in_(ids)]
        if endpoint is not None:
            cond.append(_del.c.endpoint_id == endpoint)
        if status is not None:
            cond.append(_del.c.status == status)
        # key order: one UPDATE, rows locked in id order
        target_ids = conn.execute(select(_del.c.id).where(*cond).order_by(_del.c.id)).scalars().all()
        if not target_ids:
            return 0
        if conn.dialect.name == "postgresql":
            conn.execute(select(_del.c.id).where(_del.c.id.in_(target_ids)).order_by(_del.c.id).with_for_update())
        conn.execute(update(_del).where(_del.c.id.in_(target_ids))
                     .values(status="pending", attempts=0, next_attempt_at=now_us, last_error=None,
                             delivered_at=None))
        return len(target_ids)


def backlog(conn: Connection) -> int:
    """Events waiting for fan-out plus deliveries waiting to be sent."""
    events = conn.execute(select(func.count()).select_from(_out).where(_out.c.status == "pending")).scalar_one()
    sends = conn.execute(select(func.count()).select_from(_del).where(_del.c.status == "pending")).scalar_one()
    return int(events) + int(sends)
