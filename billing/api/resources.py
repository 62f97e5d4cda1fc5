"""The objects the list and write routes answer with (typed for the OpenAPI document) and
their JSON from the ledger's rows. Amounts are decimal strings, instants ISO 8601 UTC."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

from billing.api.pagination import ListObject
from billing.money import dec_str

_MICRO = Decimal(10) ** 6


def iso(t) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t is not None else None


class CustomerObject(BaseModel):
    object: Literal["customer"] = "customer"
    id: str = Field(examples=["acme"])
    name: str
    timezone: str = Field(examples=["Europe/Paris"])
    currency: str = Field(examples=["USD"])
    created_at: str = Field(examples=["2026-10-01T00:00:00Z"])


def customer_json(row: Any) -> dict[str, Any]:
    return {"object": "customer", "id": row.id, "name": row.name, "timezone": row.timezone,
            "currency": row.currency, "created_at": iso(row.created_at)}


class PlanVersion(BaseModel):
    id: str = Field(examples=["support-chatbot"])
    version: int = Field(examples=[1])


class SubscriptionObject(BaseModel):
    object: Literal["subscription"] = "subscription"
    id: int = Field(examples=[1])
    customer: str = Field(examples=["acme"])
    plan: PlanVersion
    status: str = Field(description="active, canceled (ended) or replaced (by a plan change)", examples=["active"])
    started_at: str
    ended_at: str | None
    trial_end: str | None
    previous: int | None = Field(description="The subscription a plan change replaced")
    seats: int | None = Field(description="The seats held now (at its end, for an ended one)", examples=[3])


def subscription_json(row: Any, seats: int | None) -> dict[str, Any]:
    return {"object": "subscription", "id": row.id, "customer": row.customer_id,
            "plan": {"id": row.plan_id, "version": row.plan_version}, "status": row.status,
            "started_at": iso(row.started_at), "ended_at": iso(row.ended_at), "trial_end": iso(row.trial_end),
            "previous": row.previous_id, "seats": seats}


class CreditGrantObject(BaseModel):
    object: Literal["credit_grant"] = "credit_grant"
    id: str = Field(examples=["grant_3f2a9c1d0b7e4a55"])
    customer: str
    name: str
    amount: str = Field(examples=["25.00"])
    remaining: str = Field(description="The amount less what finalized invoices drew", examples=["25.00"])
    currency: str
    effective_at: str
    expires_at: str | None
    applies_to: list[str] | None = Field(description="The charges it covers (None: every usage charge)")
    created_at: str


def grant_json(row: Any, remaining_micro: int) -> dict[str, Any]:
    return {"object": "credit_grant", "id": row.id, "customer": row.customer_id, "name": row.name,
            "amount": dec_str(Decimal(row.amount_micro) / _MICRO),
            "remaining": dec_str(Decimal(remaining_micro) / _MICRO), "currency": row.currency,
            "effective_at": iso(row.effective_at), "expires_at": iso(row.expires_at),
            "applies_to": row.applies_to.split(",") if row.applies_to else None, "created_at": iso(row.created_at)}


class ServicePeriod(BaseModel):
    start: str
    end: str


class InvoiceLineObject(BaseModel):
    description: str
    kind: str
    key: str
    quantity: str
    unit_price: str | None
    amount: str
    service_period: ServicePeriod
    billed_in_advance: bool


class InvoiceObject(BaseModel):
    """An invoice or a credit note (``kind``), as ``billing invoice show --json`` prints it."""

    object: Literal["invoice", "credit_note"]
    id: int
    number: str | None = Field(examples=["INV-000001"])
    kind: Literal["invoice", "credit_note"]
    status: str = Field(examples=["finalized"])
    customer: str
    currency: str
    plan: PlanVersion
    period: ServicePeriod
    total: str = Field(examples=["41.50"])
    provider_cost: str
    corrects_invoice_id: int | None
    finalized_at: str | None
    paid_at: str | None
    lines: list[InvoiceLineObject] | None = Field(description="Absent (null) in lists")


def invoice_doc(inv: Any, lines: list | None) -> dict[str, Any]:
    """``invoicing.service.invoice_json`` (the CLI's) with ``object``; ``lines`` None in lists."""
    from billing.invoicing.service import invoice_json

    doc = invoice_json(inv, lines or [])
    if lines is None:
        doc["lines"] = None
    return {"object": inv.kind, **doc}


class EventObject(BaseModel):
    object: Literal["event"] = "event"
    id: str = Field(examples=["call_7f3a9c"])
    customer: str
    type: str = Field(examples=["llm.call"])
    timestamp: str
    properties: dict[str, Any]
    model: str | None
    cost: str = Field(description="Provider cost (0 while unpriced)", examples=["0.0123"])
    status: Literal["ok", "unpriced", "unmetered", "unpriced+unmetered"]
    unpriced: str | None = Field(description="Why the cost book could not price it")
    unmetered: str | None = Field(description="Why no plan meters it")


def event_json(row: Any) -> dict[str, Any]:
    status = "+".join(s for s in ("unpriced", "unmetered") if getattr(row, s)) or "ok"
    props = row.properties
    if isinstance(props, (str, bytes)):
        import orjson

        props = orjson.loads(props)
    return {"object": "event", "id": row.event_id, "customer": row.customer_id, "type": row.type,
            "timestamp": iso(_from_us(row.ts)), "properties": props, "model": row.model,
            "cost": dec_str(Decimal(row.cost_pico) / Decimal(10) ** 12), "status": status,
            "unpriced": row.unpriced, "unmetered": row.unmetered}


def _from_us(us: int):
    from billing.store.types import from_us

    return from_us(us)


class CustomerList(ListObject):
    data: list[CustomerObject]


class SubscriptionList(ListObject):
    data: list[SubscriptionObject]


class CreditGrantList(ListObject):
    data: list[CreditGrantObject]


class InvoiceList(ListObject):
    data: list[InvoiceObject]


class EventList(ListObject):
    data: list[EventObject]
