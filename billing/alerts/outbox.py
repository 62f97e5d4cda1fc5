"""The webhook outbox (at-least-once): rows are queued in the transaction that decides to
send them; dispatchers (``billing.alerts.delivery.WebhookDispatcher``) claim due rows with a
lease, then mark them delivered or reschedule them with backoff."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from billing.store.operational_models import WebhookOutbox
from billing.store.types import to_us

_outbox = WebhookOutbox.__table__


class Outbox:
    """The webhook outbox (at-least-once): rows are queued in the transaction that decides
    to send them; dispatchers claim due rows with a lease (a conditional update, so two
    dispatchers never send the same row at once), then mark them delivered or reschedule
    them with backoff. Receivers dedupe on ``dedupe_id``."""

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

    def claim_due(self, limit: int = 100, lease_seconds: float = 60.0) -> list[dict]:
        now_us = to_us(self.clock())
        lease_us = now_us + int(lease_seconds * 1_000_000)
        with self.engine.connect() as conn:
            rows = conn.execute(select(_outbox.c.id, _outbox.c.next_attempt_at)
                                .where(_outbox.c.status == "pending", _outbox.c.next_attempt_at <= now_us)
                                .order_by(_outbox.c.next_attempt_at, _outbox.c.id).limit(limit)).all()
            conn.rollback()
        claimed = []
        for row in rows:
            with self.engine.begin() as conn:
                ok = conn.execute(update(_outbox).where(_outbox.c.id == row.id, _outbox.c.status == "pending",
                                                        _outbox.c.next_attempt_at == row.next_attempt_at)
                                  .values(next_attempt_at=lease_us)).rowcount
                if ok:
                    full = conn.execute(select(_outbox).where(_outbox.c.id == row.id)).first()
                    claimed.append(dict(full._mapping))
        return claimed

    def delivered(self, row_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(_outbox).where(_outbox.c.id == row_id)
                         .values(status="delivered", delivered_at=to_us(self.clock()),
                                 attempts=_outbox.c.attempts + 1, last_error=None))

    def failed(self, row_id: int, error: str, retry_in: float | None) -> None:
        """Reschedule after ``retry_in`` seconds, or give up (``dead``) when None."""
        now_us = to_us(self.clock())
        values: dict[str, Any] = {"attempts": _outbox.c.attempts + 1, "last_error": error[:500]}
        if retry_in is None:
            values["status"] = "dead"
        else:
            values["next_attempt_at"] = now_us + int(retry_in * 1_000_000)
        with self.engine.begin() as conn:
            conn.execute(update(_outbox).where(_outbox.c.id == row_id).values(**values))

    def backlog(self) -> int:
        """Deliveries waiting (pending, due or not)."""
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(_outbox).where(_outbox.c.status == "pending")
                                ).scalar_one()

    def rows(self, status: str | None = None) -> list[dict]:
        query = select(_outbox).order_by(_outbox.c.id)
        if status is not None:
            query = query.where(_outbox.c.status == status)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]
