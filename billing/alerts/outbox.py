"""The webhook outbox (at-least-once): one row per event, queued in the transaction that
makes the change it reports (``billing.alerts.events``); the dispatcher
(``billing.alerts.delivery.WebhookDispatcher``) fans each out to the endpoints
(``billing.alerts.deliveries``), then delivers, retries and logs each delivery."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from billing.store.operational_models import WebhookOutbox

_outbox = WebhookOutbox.__table__


class Outbox:
    """The webhook outbox: one row per event (status ``pending`` until fanned out to the
    endpoints, then ``dispatched``). Receivers dedupe on ``dedupe_id`` (the ``webhook-id``)."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.engine = engine
        self.clock = clock

    @staticmethod
    def enqueue(conn: Connection, dedupe_id: str, customer: str, type_: str, payload: dict, now_us: int) -> bool:
        mod = pg_dialect if conn.dialect.name == "postgresql" else sqlite_dialect
        return conn.execute(mod.insert(_outbox).values(
            dedupe_id=dedupe_id, customer_id=customer, type=type_, payload=json.dumps(payload, default=str),
            status="pending", attempts=0, next_attempt_at=now_us, created_at=now_us)
            .on_conflict_do_nothing().returning(_outbox.c.id)).first() is not None  # rowcount is -1 on psycopg

    def backlog(self) -> int:
        """Webhooks waiting: events not yet fanned out plus deliveries not yet sent."""
        from billing.alerts.deliveries import backlog

        with self.engine.connect() as conn:
            return backlog(conn)

    def rows(self, status: str | None = None, *, type_: str | None = None) -> list[dict]:
        query = select(_outbox).order_by(_outbox.c.id)
        if status is not None:
            query = query.where(_outbox.c.status == status)
        if type_ is not None:
            query = query.where(_outbox.c.type == type_)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]
