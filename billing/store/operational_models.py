"""Tables of quota holds, late commits, rate windows, agent task usage, budget alerts, the
webhook outbox, webhook endpoints, deliveries and attempts, API keys and idempotency records of HTTP requests. Same conventions as ``billing.store.models``: instants as integer
microseconds since the Unix epoch (UTC), units in micro-units, provider cost in pico.

Imported by ``migrations/env.py`` so Alembic sees these tables.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from billing.store.types import BigIntPK


class QuotaHold(SQLModel, table=True):
    """A reservation: units held against a customer's meter until committed, released or
    expired (a hold counts only while ``status = 'held' and expires_at > now``)."""

    __tablename__ = "quota_hold"
    __table_args__ = (
        UniqueConstraint("customer_id", "request_id", name="uq_quota_hold_customer_request"),
        Index("ix_quota_hold_live", "customer_id", "status", "expires_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    customer_id: str = Field(primary_key=True, max_length=200)  # (in the key: distributed by customer)
    request_id: str = Field(max_length=200)
    key: str = Field(max_length=80)  # the meter or charge key asked for
    meter: str = Field(max_length=80)
    event_type: str = Field(default="", max_length=100)
    period_start: int = Field(sa_type=BigInteger)
    units_micro: int = Field(default=0, sa_type=BigInteger)
    cost_pico: int = Field(default=0, sa_type=BigInteger)  # estimated provider cost
    tokens: int = Field(default=0, sa_type=BigInteger)  # estimated tokens (agent limits)
    steps: int = Field(default=0)
    task: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=200)  # the lane's model
    tier: str = Field(default="fast", max_length=20)
    outcome: str = Field(default="allow", max_length=20)
    reason: str = Field(default="included", max_length=40)
    decision: str = Field(default="{}", sa_column=Column(Text, nullable=False))  # the decision as JSON
    status: str = Field(default="held", max_length=20)  # held | committed | released | expired (purged)
    created_at: int = Field(sa_type=BigInteger)
    expires_at: int = Field(sa_type=BigInteger)
    settled_at: int | None = Field(default=None, sa_type=BigInteger)
    event_id: str | None = Field(default=None, max_length=200)
    # what the call adds to each budget it counts against (JSON {budget id: decimal text}); None: none
    budgets: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class QuotaLateCommit(SQLModel, table=True):
    """A commit that arrived after its hold expired: its event was recorded and counted
    anyway (the usage happened), though the hold's units may meanwhile have been granted to
    another reservation. Written in the commit's transaction, once per hold."""

    __tablename__ = "quota_late_commit"
    __table_args__ = (
        Index("ix_quota_late_commit_customer", "customer_id", "committed_at"),
        Index("ix_quota_late_commit_at", "committed_at"),
    )

    hold_id: str = Field(primary_key=True, max_length=40)
    customer_id: str = Field(primary_key=True, max_length=200)  # (in the key: distributed by customer)
    meter: str = Field(max_length=80)
    event_id: str = Field(max_length=200)
    units_micro: int = Field(default=0, sa_type=BigInteger)  # what the hold had held
    expired_at: int = Field(sa_type=BigInteger)  # the hold's expires_at
    committed_at: int = Field(sa_type=BigInteger)


class QuotaRateWindow(SQLModel, table=True):
    """Grants counted in one fixed rate-limit window of a charge (epoch-aligned)."""

    __tablename__ = "quota_rate_window"

    customer_id: str = Field(primary_key=True, max_length=200)
    charge: str = Field(primary_key=True, max_length=80)
    window_start: int = Field(primary_key=True, sa_type=BigInteger)
    window_end: int = Field(sa_type=BigInteger)
    count: int = Field(default=0, sa_type=BigInteger)


class AgentTaskUsage(SQLModel, table=True):
    """Committed usage of one agent task (events sharing the plan's task property). Tokens
    and cost are exact integers of any size: ``*_carry * 10^18 + tokens`` / ``cost_pico``."""

    __tablename__ = "agent_task_usage"

    customer_id: str = Field(primary_key=True, max_length=200)
    task_id: str = Field(primary_key=True, max_length=200)
    steps: int = Field(default=0, sa_type=BigInteger)
    tokens: int = Field(default=0, sa_type=BigInteger)
    cost_pico: int = Field(default=0, sa_type=BigInteger)
    updated_at: int = Field(default=0, sa_type=BigInteger)
    tokens_carry: int = Field(default=0, sa_type=BigInteger)
    cost_carry: int = Field(default=0, sa_type=BigInteger)


class BudgetRow(SQLModel, table=True):
    """A customer's budget (``billing.quota.budgets.Budget``): a limit on the billed amount,
    provider cost or units of the customer or of one property value of its events, over a
    reset window. Created through the API and CLI (``billing.budgets``)."""

    __tablename__ = "budget"
    # ids never reused (SQLite: AUTOINCREMENT): alerts and holds name a budget by its id
    __table_args__ = (UniqueConstraint("customer_id", "name", name="uq_budget_customer_name"),
                      {"sqlite_autoincrement": True})

    id: int | None = Field(default=None, primary_key=True)
    customer_id: str = Field(max_length=200, foreign_key="customer.id")
    name: str = Field(max_length=100)
    measure: str = Field(max_length=20)  # billed | cost | units
    amount: str = Field(max_length=40)  # decimal text
    reset_window: str = Field(max_length=20)  # daily | weekly | monthly | period
    enforcement: str = Field(max_length=10)  # soft | hard
    policy: str = Field(max_length=20)  # alert | deny | downgrade
    scope_property: str | None = Field(default=None, max_length=64)  # None: the whole customer
    scope_value: str | None = Field(default=None, max_length=200)
    meter: str | None = Field(default=None, max_length=80)
    model: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=64)
    created_at: int = Field(sa_type=BigInteger)


class BudgetAlertRow(SQLModel, table=True):
    """A budget threshold crossed once per (customer, period, subject, threshold)."""

    __tablename__ = "budget_alert"

    customer_id: str = Field(primary_key=True, max_length=200)
    period_start: int = Field(primary_key=True, sa_type=BigInteger)
    subject: str = Field(primary_key=True, max_length=120)  # "charge:<key>" | "spend_cap" | "budget"
    threshold: str = Field(primary_key=True, max_length=20)  # percent, decimal text
    value: str = Field(default="0", max_length=80)  # usage or spend when it fired
    limit: str = Field(default="0", max_length=80)
    fired_at: int = Field(sa_type=BigInteger)


class WebhookOutbox(SQLModel, table=True):
    """Outgoing webhooks (at-least-once): delivered with retries and backoff; receivers
    dedupe on ``dedupe_id`` (sent as the ``Billing-Webhook-Id`` header)."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (Index("ix_webhook_outbox_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    dedupe_id: str = Field(unique=True, max_length=200)
    customer_id: str = Field(max_length=200)
    type: str = Field(max_length=80)
    payload: str = Field(sa_column=Column(Text, nullable=False))  # JSON
    status: str = Field(default="pending", max_length=20)  # pending | delivered | dead
    attempts: int = Field(default=0)
    next_attempt_at: int = Field(sa_type=BigInteger)
    last_error: str | None = Field(default=None, max_length=500)
    created_at: int = Field(sa_type=BigInteger)
    delivered_at: int | None = Field(default=None, sa_type=BigInteger)


class WebhookEndpoint(SQLModel, table=True):
    """Where webhooks go (``billing webhooks``, ``/v1/webhook_endpoints``): a URL, its
    Standard Webhooks secret, the event types it receives (JSON list; empty: every type)."""

    __tablename__ = "webhook_endpoint"

    id: str = Field(primary_key=True, max_length=40)  # we_<hex>
    url: str = Field(max_length=2000)
    secret: str = Field(max_length=120)  # whsec_<base64>
    event_types: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON list
    description: str | None = Field(default=None, max_length=500)
    status: str = Field(default="enabled", max_length=20)  # enabled | disabled
    created_at: int = Field(sa_type=BigInteger)
    updated_at: int = Field(sa_type=BigInteger)


class WebhookDelivery(SQLModel, table=True):
    """One outbox event for one endpoint (fan-out): retried with backoff until delivered or
    dead; ``billing webhooks replay`` makes it pending again."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (UniqueConstraint("outbox_id", "endpoint_id", name="uq_webhook_delivery_event_endpoint"),
                      Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
                      Index("ix_webhook_delivery_endpoint", "endpoint_id", "id"))

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    outbox_id: int = Field(sa_type=BigInteger)  # webhook_outbox.id: the event
    endpoint_id: str = Field(max_length=40)  # webhook_endpoint.id, or "env" (BILLING_WEBHOOK_URL)
    status: str = Field(default="pending", max_length=20)  # pending | delivered | dead | canceled
    attempts: int = Field(default=0)
    next_attempt_at: int = Field(sa_type=BigInteger)
    last_status_code: int | None = Field(default=None)
    last_error: str | None = Field(default=None, max_length=500)
    created_at: int = Field(sa_type=BigInteger)
    delivered_at: int | None = Field(default=None, sa_type=BigInteger)


class WebhookAttempt(SQLModel, table=True):
    """The delivery log: one row per POST (status code or error, time taken)."""

    __tablename__ = "webhook_attempt"
    __table_args__ = (Index("ix_webhook_attempt_delivery", "delivery_id", "attempt"),)

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    delivery_id: int = Field(sa_type=BigInteger)
    attempt: int
    at: int = Field(sa_type=BigInteger)
    status_code: int | None = Field(default=None)
    error: str | None = Field(default=None, max_length=500)
    took_ms: int = Field(default=0)


class ApiKey(SQLModel, table=True):
    """An API key, stored as its SHA-256 hash. ``scope``: ingest | check | read | admin;
    ``customer_id`` restricts the key to one customer's data."""

    __tablename__ = "api_key"

    id: str = Field(primary_key=True, max_length=40)  # public id (prefix of the key)
    key_hash: str = Field(unique=True, max_length=64)
    scope: str = Field(max_length=20)
    customer_id: str | None = Field(default=None, max_length=200)
    name: str = Field(default="", max_length=200)
    created_at: int = Field(sa_type=BigInteger)
    revoked_at: int | None = Field(default=None, sa_type=BigInteger)


class IdempotencyRecord(SQLModel, table=True):
    """One ``Idempotency-Key`` of one API key (``billing.api.idempotency``): the request's
    fingerprint and, once answered, the response to replay. ``in_flight`` while a server
    runs the request (``owner``, lease until ``locked_until``); ``done`` with the response."""

    __tablename__ = "idempotency_record"
    __table_args__ = (Index("ix_idempotency_record_created", "created_at"),)

    scope: str = Field(primary_key=True, max_length=40)  # the API key's id
    key: str = Field(primary_key=True, max_length=255)
    fingerprint: str = Field(max_length=64)  # SHA-256 of method, path, query and canonical body
    status: str = Field(default="in_flight", max_length=20)  # in_flight | done
    owner: str = Field(max_length=32)
    locked_until: int = Field(sa_type=BigInteger)
    created_at: int = Field(sa_type=BigInteger)
    response_status: int | None = Field(default=None)
    response_headers: str | None = Field(default=None, sa_column=Column(Text, nullable=True))  # JSON pairs
    response_body: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
