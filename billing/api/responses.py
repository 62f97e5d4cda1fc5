"""Response bodies of the HTTP API, for the OpenAPI document (``documented``).

Routes that serialise their answer themselves (``billing.api.routes._json``: plain JSON
without FastAPI's encoder) declare these models for the document only; schemathesis
(tests/api/test_schemathesis.py) checks every answer against them. Amounts are decimal
strings (money is never a float); instants are ISO 8601 with a timezone.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from billing.api.errors import error_responses
from billing.errors import ErrorCode

Amount = str  # a decimal number as text: "12.50"
Instant = str  # ISO 8601 with a timezone: "2026-10-01T00:00:00Z"


class Out(BaseModel):
    """An answer (more fields may be added later: clients ignore the ones they do not know)."""

    model_config = ConfigDict(extra="allow")


def _example(**example: Any) -> ConfigDict:
    return ConfigDict(extra="allow", json_schema_extra={"examples": [example]})


def documented(model: Any, *codes: ErrorCode | str, status: int = 200, description: str = "OK",
               media: str = "application/json") -> dict[str, Any]:
    """A route decorator's ``response_model=None`` and ``responses=``: ``model`` as the
    success answer (documented only: the route's own JSON is sent as is) and the error
    answers of ``codes`` (``billing.api.errors.error_responses``)."""
    responses: dict[int | str, dict[str, Any]] = dict(error_responses(*codes))
    if media == "application/json":
        responses[status] = {"model": model, "description": description}
    else:
        responses[status] = {"description": description, "content": {media: {"schema": model}}}
    return {"response_model": None, "responses": responses}


class Health(Out):
    model_config = _example(status="ok")
    status: Literal["ok"]


class PlanRef(Out):
    id: str
    version: int


class Period(Out):
    start: Instant
    end: Instant


class EventResult(Out):
    index: int
    id: Any = None  # the id as sent (null when the event had none)
    customer: Any = None
    status: Literal["accepted", "duplicate", "conflict", "rejected"]
    code: str | None = None
    message: str | None = None


class EventsOut(Out):
    """``POST /v1/events``: counts, then one result per event in order."""

    model_config = _example(accepted=1, duplicates=0, conflicts=0, rejected=0, unpriced=0, unmetered=0, results=[
        {"index": 0, "id": "evt_1", "customer": "acme", "status": "accepted", "code": None, "message": None}])
    accepted: int
    duplicates: int
    conflicts: int
    rejected: int
    unpriced: int
    unmetered: int
    results: list[EventResult]


class EventsQueued(Out):
    """``Prefer: respond-async``: persisted on the event log, recorded by ``billing ingest-worker``."""

    status: Literal["queued"]
    stream: str


class Lane(Out):
    tier: Any = None
    model: str | None = None


class Decision(Out):
    model_config = _example(outcome="allow", allowed=True, reason="within_included", lane={"tier": 0, "model": None},
                            meter="requests", charges=["requests"], units="1", remaining={"requests": "999"},
                            remaining_money=None, spend="0", credits_remaining="0", amount="0", retry_after=None,
                            message="", guard=None, cost_remaining=None, task=None)
    outcome: str
    allowed: bool
    reason: str
    lane: Lane
    meter: str | None
    charges: list[str]
    units: Amount
    remaining: dict[str, Amount | None]
    remaining_money: Amount | None
    spend: Amount
    credits_remaining: Amount
    amount: Amount
    retry_after: float | None
    message: str | None
    guard: Any = None
    cost_remaining: Amount | None
    task: dict[str, Any] | None
    warnings: list[dict[str, Any]] | None = None


class ReservationOut(Out):
    reservation_id: str | None
    granted: bool
    expires_at: Instant | None
    replayed: bool
    status: str | None
    decision: Decision
    warnings: list[dict[str, Any]] | None = None


class CommitOut(Out):
    reservation_id: str
    event_id: str | None = None
    status: str
    event: str | None = None
    late_commit: bool | None = None


class ReleaseOut(Out):
    reservation_id: str
    status: str


class CustomerOut(Out):
    model_config = _example(id="acme", name="Acme Inc.", timezone="Europe/Paris", currency="EUR",
                            created_at="2026-10-01T00:00:00Z")
    id: str
    name: str
    timezone: str
    currency: str
    created_at: Instant | None


class SubscriptionOut(Out):
    id: int
    customer: str
    plan: PlanRef
    status: str
    started_at: Instant | None
    ended_at: Instant | None
    trial_end: Instant | None


class SubscribedOut(SubscriptionOut):
    seats: int


class CustomerWithSubscription(CustomerOut):
    model_config = _example(id="acme", name="Acme Inc.", timezone="Europe/Paris", currency="EUR",
                            created_at="2026-10-01T00:00:00Z", subscription={
                                "id": 1, "customer": "acme", "plan": {"id": "support-chatbot", "version": 1},
                                "status": "active", "started_at": "2026-10-01T00:00:00Z", "ended_at": None,
                                "trial_end": None})
    subscription: SubscriptionOut | None


class SeatsOut(Out):
    customer: str
    subscription_id: int
    seats: int
    effective_at: Instant


class UsageOut(Out):
    """The customer's current period: per meter and charge used, held, included, remaining, spend."""

    customer: str
    plan: PlanRef
    currency: str
    seats: int
    period: Period
    meters: dict[str, dict[str, Any]]
    charges: list[dict[str, Any]]
    spend: Amount
    spend_cap: Amount | None
    credits: Amount
    credits_remaining: Amount


class InvoiceLine(Out):
    description: str
    kind: str
    key: str | None
    quantity: Any
    unit_price: Any
    amount: Amount
    service_period: Period
    billed_in_advance: bool


class InvoiceSummary(Out):
    id: int
    number: str | None
    kind: str
    status: str
    customer: str
    currency: str
    plan: PlanRef
    period: Period
    total: Amount
    provider_cost: Amount
    corrects_invoice_id: int | None
    finalized_at: Instant | None
    paid_at: Instant | None


class InvoiceOut(InvoiceSummary):
    lines: list[InvoiceLine]


class PlanSummary(Out):
    plan: str
    version: int
    name: str | None
    currency: str
    effective_from: Instant | None
    description: str | None
    meters: list[str]
    charges: list[str]


class PlansOut(Out):
    plans: list[PlanSummary]


class PlanOut(Out):
    plan: str
    versions: list[dict[str, Any]]  # each version as the plan language writes it (docs/plans)


class MeteringOut(Out):
    customer: str
    plan: PlanRef
    meters: list[dict[str, Any]]
    charges: list[dict[str, Any]]
    task_property: str


class FlaggedEvent(Out):
    id: str
    customer: str
    type: str
    timestamp: Instant
    model: str | None
    status: str
    unpriced: bool
    unmetered: bool
    tokens: Amount
    cost: Amount
    properties: dict[str, Any]


class UnpricedOut(Out):
    events: list[FlaggedEvent]
    next_after: int | None
    totals: list[dict[str, Any]]


class LateCommitsOut(Out):
    since: Instant
    until: Instant
    late_commits: int
    by_meter: list[dict[str, Any]]


class KeyOut(Out):
    id: str
    scope: Literal["ingest", "check", "read", "admin"]
    customer: str | None
    name: str
    created_at: Instant | None
    revoked_at: Instant | None


class KeysOut(Out):
    keys: list[KeyOut]


class KeyRevoked(Out):
    id: str
    revoked: Literal[True]


class OtlpOut(Out):
    """An OTLP ``ExportTraceServiceResponse`` (``partialSuccess`` when spans were not
    recorded) with the recording report under ``billing``."""

    partialSuccess: dict[str, Any] | None = None
    billing: dict[str, Any]


class StripeWebhookOut(Out):
    received: Literal[True]
    id: Any = None
    type: Any = None
