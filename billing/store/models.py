"""Ledger tables (SQLModel). Exact numbers are integers in fixed units:

- provider cost: ``cost_pico`` (1e-12 of the currency unit: exact for every shipped price);
- money on invoices and grants: ``*_minor`` (the currency's minor unit, cents for USD) or
  ``*_micro`` (1e-6, for grants that may carry sub-cent amounts);
- counter units: ``units_micro`` (1e-6 of a unit, so multipliers like 0.5x stay exact);
- running totals that may pass 2^63 (counters, agent task usage, an invoice's provider
  cost) add a ``*_carry`` column in units of 10^18 beside the low part:
  ``carry * 10^18 + low`` (``billing.store.wide``);
- event time: ``ts`` in integer microseconds since the Unix epoch, UTC.

Display-only decimals (line quantities, unit prices) are stored as exact decimal text.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, String, Text, UniqueConstraint, false as sa_false, text
from sqlmodel import Field, SQLModel

from billing.store.types import BigIntPK, UTCDateTime


def _utc(nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index) if nullable else \
        Field(sa_type=UTCDateTime, nullable=False, index=index)


class Customer(SQLModel, table=True):
    __tablename__ = "customer"

    id: str = Field(primary_key=True, max_length=200)
    name: str = Field(default="", max_length=300)
    timezone: str = Field(default="UTC", max_length=64)
    currency: str = Field(default="USD", max_length=3)
    stripe_customer_id: str | None = Field(default=None, max_length=255)
    # overrides the plan's invoice_when_due_reaches for this customer (decimal text; None: the plan's)
    invoice_when_due_reaches: str | None = Field(default=None, max_length=40)
    created_at: datetime = _utc()
    # the customer's own cost guardrails (CostGuard JSON) in place of its plan's; None: the plan's
    cost_guard: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # bumped by the database on every change to what a quota context reads (billing.store.context_stamp)
    context_version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))


class Subscription(SQLModel, table=True):
    __tablename__ = "subscription"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: str = Field(foreign_key="customer.id", index=True, max_length=200)
    plan_id: str = Field(max_length=80)
    plan_version: int
    status: str = Field(default="active", max_length=20)  # active | canceled | replaced
    started_at: datetime = _utc()
    anchor_at: datetime = _utc()
    ended_at: datetime | None = _utc(nullable=True)
    trial_end: datetime | None = _utc(nullable=True)
    previous_id: int | None = Field(default=None, foreign_key="subscription.id")
    created_at: datetime = _utc()


class SeatChange(SQLModel, table=True):
    __tablename__ = "seat_change"

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int = Field(foreign_key="subscription.id", index=True)
    effective_at: datetime = _utc()
    seats: int
    created_at: datetime = _utc()


class UsageEventRow(SQLModel, table=True):
    """One usage event, append-only. ``(customer_id, event_id)`` is the client's idempotency key.

    Kept narrow on purpose (ingestion speed): token counts stay in ``properties``; ``model``
    is promoted for cost reports; ``id`` orders events by arrival (the invoicing watermark).

    ``unpriced`` / ``unmetered`` (NULL for most events) say why an event was kept though the
    cost book could not price it (its ``cost_pico`` is 0 until a price arrives and
    ``billing.ledger.recost`` fills it in) or no plan meters its type. They are derived at
    ingestion, not content: a replay is a duplicate whatever they say. Partial indexes keep
    them cheap to find and free for every other event."""

    __tablename__ = "usage_event"
    __table_args__ = (
        UniqueConstraint("customer_id", "event_id", name="uq_usage_event_customer_event"),
        # periods are closed for many customers at once: a time-range index (append-mostly
        # on ingestion, since events arrive roughly in time order)
        Index("ix_usage_event_ts_customer", "ts", "customer_id"),
        # one customer's events in time order (GET /v1/events?customer=..., keyset by (ts, id))
        Index("ix_usage_event_customer_ts", "customer_id", "ts", "id"),
        Index("ix_usage_event_unpriced", "model", "id", postgresql_where=text("unpriced IS NOT NULL"),
              sqlite_where=text("unpriced IS NOT NULL")),
        Index("ix_usage_event_flagged", "customer_id", "id",
              postgresql_where=text("unpriced IS NOT NULL OR unmetered IS NOT NULL"),
              sqlite_where=text("unpriced IS NOT NULL OR unmetered IS NOT NULL")),
    )

    id: int | None = Field(default=None, sa_type=BigIntPK, primary_key=True)
    customer_id: str = Field(max_length=200)
    event_id: str = Field(max_length=200)
    type: str = Field(max_length=100)
    ts: int = Field(sa_type=BigInteger)
    properties: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    model: str | None = Field(default=None, max_length=200)
    cost_pico: int = Field(default=0, sa_type=BigInteger)
    unpriced: str | None = Field(default=None, max_length=500)  # why the cost is unknown yet
    unmetered: str | None = Field(default=None, max_length=500)  # why no plan meters it


class UsageCounter(SQLModel, table=True):
    """Running usage per customer, meter and period, changed only by atomic increments
    (and rebuilt from the events when a subscription's coverage changes: ``recount``).

    Counts every matching event as ingested (outcome disputes are settled at rating). The
    row with meter ``*`` (``counters.ALL_EVENTS``) counts every event of the period, metered
    or not, with their provider cost; its ``units_micro`` counts the values of the period
    that were rounded to the micro-unit (0: the period's counters are exact).

    Units and cost are exact integers of any size: ``units_carry * 10^18 + units_micro``
    and ``cost_carry * 10^18 + cost_pico``, the low parts in [0, 10^18)
    (``billing.store.wide``)."""

    __tablename__ = "usage_counter"

    customer_id: str = Field(primary_key=True, max_length=200)
    meter: str = Field(primary_key=True, max_length=80)
    period_start: int = Field(primary_key=True, sa_type=BigInteger)  # microseconds, UTC
    period_end: int = Field(sa_type=BigInteger)
    units_micro: int = Field(default=0, sa_type=BigInteger)
    events: int = Field(default=0, sa_type=BigInteger)
    cost_pico: int = Field(default=0, sa_type=BigInteger)
    units_carry: int = Field(default=0, sa_type=BigInteger)  # units: carry * 10^18 + units_micro
    cost_carry: int = Field(default=0, sa_type=BigInteger)  # cost: carry * 10^18 + cost_pico


class UsageRollup(SQLModel, table=True):
    """Hourly usage per customer, event type, model and the values of the rolled-up
    dimensions, kept by ingestion in the transaction that stores the events
    (``billing.ledger.rollups``); every event counts in exactly one row.

    ``dims``: the JSON object of the event's rolled-up properties (``rollup_dimension``) and
    their values as text (as SQL reads them), sorted by name; ``{}`` for none. ``model``
    ``''``: no model. Token columns and ``sums`` (a JSON object of every other integer
    property below 10^15) sum the events' integer values; ``rounded`` counts token values the
    columns leave out (not integers); ``odd`` counts events whose key text is not
    exact (a model ``''``, a dimension value that is no text, integer or boolean);
    ``tokened`` counts the events carrying a token count (NULL: unknown, rows written before
    the column existed, until ``billing db recount``). Cost: ``cost_carry * 10^18 +
    cost_pico`` (``billing.store.wide``)."""

    __tablename__ = "usage_rollup"

    customer_id: str = Field(primary_key=True, max_length=200)
    hour: int = Field(primary_key=True, sa_type=BigInteger)  # microseconds, UTC, a whole hour
    type: str = Field(primary_key=True, max_length=100)
    model: str = Field(primary_key=True, max_length=200)
    dims: str = Field(primary_key=True, max_length=2000)
    events: int = Field(default=0, sa_type=BigInteger)
    cost_pico: int = Field(default=0, sa_type=BigInteger)
    cost_carry: int = Field(default=0, sa_type=BigInteger)
    input_tokens: int = Field(default=0, sa_type=BigInteger)
    output_tokens: int = Field(default=0, sa_type=BigInteger)
    cache_read_tokens: int = Field(default=0, sa_type=BigInteger)
    cache_write_tokens: int = Field(default=0, sa_type=BigInteger)
    reasoning_tokens: int = Field(default=0, sa_type=BigInteger)
    sums: str = Field(default="{}", sa_type=Text)
    rounded: int = Field(default=0, sa_type=BigInteger)
    odd: int = Field(default=0, sa_type=BigInteger)
    tokened: int | None = Field(default=None, sa_type=BigInteger, nullable=True)


class RollupDimension(SQLModel, table=True):
    """The event properties ``usage_rollup`` keeps per value (``billing db recount``
    rebuilds the rollups when ``BILLING_ROLLUP_DIMENSIONS`` changes them)."""

    __tablename__ = "rollup_dimension"

    name: str = Field(primary_key=True, max_length=100)


class CreditGrantRow(SQLModel, table=True):
    __tablename__ = "credit_grant"

    id: str = Field(primary_key=True, max_length=200)
    customer_id: str = Field(foreign_key="customer.id", index=True, max_length=200)
    name: str = Field(default="Prepaid credits", max_length=200)
    amount_micro: int = Field(sa_type=BigInteger)
    currency: str = Field(default="USD", max_length=3)
    effective_at: datetime = _utc()
    expires_at: datetime | None = _utc(nullable=True)
    applies_to: str | None = Field(default=None, max_length=1000)  # comma-separated charge keys
    created_at: datetime = _utc()


class CreditBurn(SQLModel, table=True):
    """Credit drawn by a finalized invoice (append-only; remaining = amount - burns)."""

    __tablename__ = "credit_burn"

    id: int | None = Field(default=None, primary_key=True)
    grant_id: str = Field(foreign_key="credit_grant.id", index=True, max_length=200)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    amount_micro: int = Field(sa_type=BigInteger)


class Invoice(SQLModel, table=True):
    """An invoice or a credit note. Finalized documents never change (only their status
    moves, by the rules of ``billing.invoicing.lifecycle``)."""

    __tablename__ = "invoice"

    id: int | None = Field(default=None, primary_key=True)
    number: str | None = Field(default=None, unique=True, max_length=40)
    dedupe_key: str = Field(unique=True, max_length=200)
    kind: str = Field(default="invoice", max_length=20)  # a lifecycle.DocumentKind
    status: str = Field(default="draft", max_length=20)  # a lifecycle.InvoiceStatus
    customer_id: str = Field(foreign_key="customer.id", index=True, max_length=200)
    subscription_id: int | None = Field(default=None, foreign_key="subscription.id", index=True)
    corrects_invoice_id: int | None = Field(default=None, foreign_key="invoice.id")
    plan_id: str = Field(max_length=80)
    plan_version: int
    currency: str = Field(max_length=3)
    period_start: datetime = _utc()
    period_end: datetime = _utc()
    total_minor: int = Field(default=0, sa_type=BigInteger)
    provider_cost_pico: int = Field(default=0, sa_type=BigInteger)
    provider_cost_carry: int = Field(default=0, sa_type=BigInteger)  # cost: carry * 10^18 + provider_cost_pico
    ledger_watermark: int = Field(default=0, sa_type=BigInteger)  # last usage_event.id seen
    created_at: datetime = _utc()
    finalized_at: datetime | None = _utc(nullable=True)
    paid_at: datetime | None = _utc(nullable=True)
    voided_at: datetime | None = _utc(nullable=True)
    payment_failed_at: datetime | None = _utc(nullable=True)
    stripe_invoice_id: str | None = Field(default=None, max_length=255, index=True)
    # when Stripe was seen to agree with our void (its invoice or credit note void, or its
    # draft deleted): the sync stops checking this document
    stripe_void_confirmed_at: datetime | None = _utc(nullable=True)


class InvoiceLineRow(SQLModel, table=True):
    __tablename__ = "invoice_line"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    position: int
    kind: str = Field(max_length=20)  # a rating.types.LineKind
    key: str = Field(default="", max_length=200)
    description: str = Field(max_length=500)
    quantity: str = Field(sa_type=String(80))
    unit_price: str | None = Field(default=None, sa_type=String(80))
    amount_minor: int = Field(sa_type=BigInteger)
    service_start: datetime = _utc()
    service_end: datetime = _utc()
    stripe_line_id: str | None = Field(default=None, max_length=255)
    # an advance fee billed for its period ahead (``billing.invoicing.advance``)
    billed_in_advance: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})


class InvoiceRecheck(SQLModel, table=True):
    """How far the ledger was checked for late events against a finalized invoice:
    ``watermark`` (events up to this id) and, when the period's running counters are exact
    for it, ``events`` (the period's event count then: a later close that finds the same
    count in the counters knows no late event arrived, without reading events)."""

    __tablename__ = "invoice_recheck"

    invoice_id: int = Field(primary_key=True, foreign_key="invoice.id")
    watermark: int = Field(sa_type=BigInteger)
    events: int | None = Field(default=None, sa_type=BigInteger)


class InvoiceCorrection(SQLModel, table=True):
    """What each correction corrects: the ``generation``-th correction (1, 2, ...) of a
    finalized invoice's period is on document ``document_id`` (a credit note, a standalone
    adjustment invoice, or adjustment lines on the subscription's next invoice). The key
    makes a second document for the same correction impossible, whoever writes it."""

    __tablename__ = "invoice_correction"

    corrected_invoice_id: int = Field(primary_key=True, foreign_key="invoice.id")
    generation: int = Field(primary_key=True)
    document_id: int = Field(foreign_key="invoice.id", index=True)


class LedgerState(SQLModel, table=True):
    """Named ledger flags. ``counters_stale`` (present: 1): the running counters miss rows
    that this schema keeps (events ingested before revision 0003); invoicing rates from
    events until ``billing db recount`` rebuilds them."""

    __tablename__ = "ledger_state"

    name: str = Field(primary_key=True, max_length=40)
    value: int = Field(default=0, sa_type=BigInteger)


class NumberSequence(SQLModel, table=True):
    """Gap-free document numbers, taken by an atomic increment."""

    __tablename__ = "number_sequence"

    name: str = Field(primary_key=True, max_length=40)
    value: int = Field(default=0, sa_type=BigInteger)


class CostPriceRow(SQLModel, table=True):
    """A model price added to the ledger's cost book (``billing costs add``, the LiteLLM
    import): every process builds its book from the shipped one, the ``BILLING_COSTS``
    files and these rows (``billing.store.cost_prices``). Prices are exact decimal text per
    1M tokens; ``origin`` names the file it came from. A ``ledger_state`` row
    ``cost_version`` counts the changes, so running processes notice them."""

    __tablename__ = "cost_price"

    model: str = Field(primary_key=True, max_length=200)
    effective_from: date = Field(primary_key=True)
    provider: str = Field(max_length=100)
    input: str = Field(max_length=80)
    output: str = Field(max_length=80)
    cache_read: str = Field(max_length=80)
    cache_write: str = Field(max_length=80)
    reasoning: str = Field(max_length=80)
    batch_discount: str = Field(default="0", max_length=80)
    source: str = Field(max_length=1000)
    retrieved: date
    aliases: str = Field(default="[]", max_length=4000)  # JSON list of names
    # JSON: 1-hour cache writes, context and service tiers, per-unit prices (billing.costs.extra_fields)
    extra: str = Field(default="{}", sa_type=Text, sa_column_kwargs={"server_default": "{}"})
    origin: str = Field(default="", max_length=500)
    added_at: datetime = _utc()


class InvoiceRecost(SQLModel, table=True):
    """A finalized period invoice whose period holds events that were re-costed after it was
    billed (a price arrived for an unpriced event). The next close re-rates the period
    through the late-event path and removes the row, if ``marks`` is still what it read
    (a re-cost meanwhile adds one, so the period is re-rated again)."""

    __tablename__ = "invoice_recost"

    invoice_id: int = Field(primary_key=True, foreign_key="invoice.id")
    marks: int = Field(default=1, sa_type=BigInteger)


# ---------------------------------------------------------------- contracts
# A subscription's contract on top of its plan version (``billing.contracts``).

class ContractOverride(SQLModel, table=True):
    """One dated override of a value of the subscription's plan version
    (``billing.catalog.overrides``): ``path`` (``charges/<key>/price`` ...), ``value`` as
    JSON text (exact decimals as strings), in force over ``[starts_at, ends_at)``."""

    __tablename__ = "contract_override"

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int = Field(foreign_key="subscription.id", index=True)
    path: str = Field(max_length=300)
    value: str = Field(sa_type=Text)
    starts_at: datetime = _utc()
    ends_at: datetime | None = _utc(nullable=True)
    created_at: datetime = _utc()


class Coupon(SQLModel, table=True):
    """A coupon: ``percent`` off (exact decimal text, 0-100) or ``amount_minor`` off (in
    ``currency``), on ``usage`` or ``all`` lines, for ``once`` / ``repeating`` (``periods``)
    / ``forever`` billing periods from its redemption."""

    __tablename__ = "coupon"

    code: str = Field(primary_key=True, max_length=80)
    name: str = Field(default="", max_length=200)
    percent: str | None = Field(default=None, max_length=40)
    amount_minor: int | None = Field(default=None, sa_type=BigInteger)
    currency: str | None = Field(default=None, max_length=3)
    duration: str = Field(max_length=20)  # once | repeating | forever
    periods: int | None = None  # repeating: how many billing periods
    applies_to: str = Field(default="all", max_length=10)  # usage | all
    created_at: datetime = _utc()


class CouponRedemption(SQLModel, table=True):
    """A coupon redeemed on a subscription at ``redeemed_at``: it applies to the invoices of
    the billing periods that overlap ``[redeemed_at, ends_at)`` (``ends_at``: the end of the
    last period its duration covers; None: forever)."""

    __tablename__ = "coupon_redemption"
    __table_args__ = (UniqueConstraint("coupon_code", "subscription_id", name="uq_coupon_redemption"),)

    id: int | None = Field(default=None, primary_key=True)
    coupon_code: str = Field(foreign_key="coupon.code", max_length=80)
    subscription_id: int = Field(foreign_key="subscription.id", index=True)
    redeemed_at: datetime = _utc()
    ends_at: datetime | None = _utc(nullable=True)
    created_at: datetime = _utc()


class TermCommitmentRow(SQLModel, table=True):
    """A commitment of ``amount_minor`` over a contract term ``[starts_at, ends_at)`` of a
    subscription, owed pro rata by each billing period of the term (``arithmetic.term_minimum``)."""

    __tablename__ = "term_commitment"

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int = Field(foreign_key="subscription.id", index=True)
    name: str = Field(default="Contract commitment", max_length=200)
    amount_minor: int = Field(sa_type=BigInteger)
    starts_at: datetime = _utc()
    ends_at: datetime = _utc()
    applies_to: str = Field(default="all", max_length=10)  # usage | all
    created_at: datetime = _utc()


class AddOnSubscription(SQLModel, table=True):
    """An add-on subscription of a customer (a fees-only plan version, e.g. an SSO or a
    support add-on) attached to a base subscription and rated into the base's invoices:
    its fees are lines of the base's invoice for each period it is active in
    (``billing.contracts``)."""

    __tablename__ = "addon_subscription"

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int = Field(foreign_key="subscription.id", index=True)  # the base subscription
    plan_id: str = Field(max_length=80)
    plan_version: int
    started_at: datetime = _utc()
    ended_at: datetime | None = _utc(nullable=True)
    created_at: datetime = _utc()
