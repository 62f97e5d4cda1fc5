"""Request bodies of the HTTP API (strict: unknown fields are errors)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from billing.ledger.accounts import MAX_ID_LENGTH, MAX_SEATS

Key = Annotated[str, Field(min_length=1, max_length=80)]
CustomerId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def example(**values: Any) -> ConfigDict:
    """A strict model's config with one example (shown in ``/docs`` and the OpenAPI document)."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [values]})


class EventsIn(Strict):
    model_config = example(events=[{"id": "call_7f3a9c", "customer": "acme", "type": "llm.call",
                                    "timestamp": "2026-10-15T12:00:00Z", "properties": {"model": "claude-sonnet-4-5"}}])
    events: Annotated[list[Any], Field(max_length=10_000)]


class QuotaIn(Strict):
    """A quota question: ``meter`` or ``charge`` (a key of the customer's plan)."""

    model_config = example(customer="acme", meter="requests", quantity="1", model="claude-sonnet-4-5")

    customer: CustomerId
    meter: Key | None = None
    charge: Key | None = None
    quantity: Annotated[Decimal, Field(ge=0, le=10**12, allow_inf_nan=False)] = Decimal(1)
    model: Annotated[str, Field(max_length=200)] | None = None
    task: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    tokens: Annotated[int, Field(ge=0, le=10**12)] | None = None
    cost: Annotated[Decimal, Field(ge=0, le=10**6, allow_inf_nan=False)] = Decimal(0)
    steps: Annotated[int, Field(ge=0, le=10**12)] | None = None
    retry: Annotated[int, Field(ge=0, le=10**12)] | None = None  # agent_limits.max_retries judges it
    depth: Annotated[int, Field(ge=0, le=10**12)] | None = None  # agent_limits.max_depth judges it
    # the properties the call's event will carry: the budgets it counts against (team, user, ...)
    properties: Annotated[dict[str, Any], Field(max_length=32)] | None = None

    @model_validator(mode="after")
    def _one_key(self) -> "QuotaIn":
        if (self.meter is None) == (self.charge is None):
            raise ValueError("give exactly one of meter or charge")
        return self

    @property
    def key(self) -> str:
        return self.meter or self.charge or ""


class ReserveIn(QuotaIn):
    model_config = example(customer="acme", meter="requests", quantity="1", ttl_seconds=60, request_id="req-42")
    ttl_seconds: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    request_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class CommitIn(Strict):
    model_config = example(reservation_id="rsv_0f3a9c5d2b7e4a18", event={"properties": {"input_tokens": 1200}})
    reservation_id: Annotated[str, Field(min_length=1, max_length=40)]
    event: dict[str, Any] | None = None


class ReleaseIn(Strict):
    model_config = example(reservation_id="rsv_0f3a9c5d2b7e4a18")
    reservation_id: Annotated[str, Field(min_length=1, max_length=40)]


class CustomerIn(Strict):
    model_config = example(id="acme", name="Acme Inc.", timezone="Europe/Paris", currency="EUR")
    id: CustomerId
    name: Annotated[str, Field(max_length=300)] = ""
    timezone: Annotated[str, Field(max_length=64)] = "UTC"
    currency: Annotated[str, Field(max_length=16)] = "USD"  # an ISO 4217 code (checked by Accounts)


class SubscribeIn(Strict):
    model_config = example(plan="support-chatbot", seats=5, at="2026-10-01T00:00:00Z")
    plan: Key
    version: Annotated[int, Field(ge=1)] | None = None
    seats: Annotated[int, Field(ge=0, le=MAX_SEATS)] = 1
    at: AwareDatetime | None = None


class SeatsIn(Strict):
    model_config = example(seats=8, at="2026-10-16T00:00:00Z")
    seats: Annotated[int, Field(ge=0, le=MAX_SEATS)]
    at: AwareDatetime | None = None
