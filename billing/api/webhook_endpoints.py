"""Webhook endpoints and their delivery log over HTTP (admin keys not restricted to a
customer), the same rules as ``billing webhooks`` (``billing.alerts.endpoints``):

- ``POST /v1/webhook_endpoints`` (url, event_types, description, secret): the endpoint with
  its ``secret`` (shown here, by ``GET .../{id}/secret`` and on rotation only);
- ``GET /v1/webhook_endpoints`` (``limit``, ``starting_after``, ``has_more``), ``GET``,
  ``PATCH`` (url, event_types, description, status enabled | disabled, rotate_secret),
  ``DELETE /v1/webhook_endpoints/{id}``;
- ``GET /v1/webhook_deliveries`` (endpoint, event, status): deliveries newest first, each
  with its attempts (time, status code, error, duration);
- ``POST /v1/webhook_deliveries/replay`` (events or since, endpoint, status): deliveries
  made pending again (``billing webhooks replay``).

A URL that is not http(s) is 422 ``validation_error`` with ``details.param = "url"``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from billing.alerts import deliveries
from billing.alerts.endpoints import Endpoints
from billing.api.auth import Principal
from billing.api.responses import Instant, Out, documented
from billing.api.routes import Admin
from billing.api.schemas import example
from billing.errors import BillingError, ErrorCode
from billing.store.types import to_us

router = APIRouter(prefix="/v1", tags=["webhooks"])
EndpointId = Annotated[str, Path(max_length=40)]
DeliveryStatus = Literal["pending", "delivered", "dead", "canceled"]
_ENDPOINT = {"id": "we_5f0c1e2d3b4a59687a6b5c4d", "url": "https://hooks.example.com/billing",
             "event_types": ["invoice.finalized", "alert.triggered"], "description": "Finance",
             "status": "enabled", "created_at": "2026-10-01T00:00:00Z", "updated_at": "2026-10-01T00:00:00Z"}
_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class EndpointIn(BaseModel):
    model_config = example(url="https://hooks.example.com/billing", event_types=["invoice.finalized"],
                           description="Finance")
    url: str = Field(max_length=4000, examples=["https://hooks.example.com/billing"])
    event_types: list[str] | None = Field(default=None, max_length=100,
                                          examples=[["invoice.finalized", "alert.triggered"]])
    description: str | None = Field(default=None, max_length=1000)
    secret: str | None = Field(default=None, max_length=200, description="whsec_<base64>; generated when absent")


class EndpointPatch(BaseModel):
    model_config = example(status="disabled", rotate_secret=True)
    url: str | None = Field(default=None, max_length=4000)
    event_types: list[str] | None = Field(default=None, max_length=100)
    description: str | None = Field(default=None, max_length=1000)
    status: str | None = Field(default=None, max_length=40, examples=["disabled"])
    rotate_secret: bool = False


class ReplayIn(BaseModel):
    model_config = example(since="2026-10-01T00:00:00Z", status="dead")
    events: list[Annotated[str, Field(max_length=200)]] | None = Field(default=None, max_length=1000)
    since: AwareDatetime | None = None
    endpoint: str | None = Field(default=None, max_length=40)
    status: DeliveryStatus | None = None


class EndpointOut(Out):
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [_ENDPOINT]})
    id: str
    url: str
    event_types: list[str]
    description: str | None
    status: Literal["enabled", "disabled"]
    created_at: Instant
    updated_at: Instant
    secret: str | None = Field(None, description="Only on create, rotation and GET .../secret")


class EndpointList(Out):
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"object": "list", "data": [_ENDPOINT], "has_more": False}]})
    object: Literal["list"]
    data: list[EndpointOut]
    has_more: bool


class SecretOut(Out):
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"id": _ENDPOINT["id"], "secret": _SECRET}]})
    id: str
    secret: str


class EndpointDeleted(Out):
    id: str
    deleted: Literal[True]


class Attempt(Out):
    attempt: int
    at: Instant
    status_code: int | None
    error: str | None
    took_ms: int | None


class DeliveryOut(Out):
    id: int
    event_id: str
    type: str
    endpoint: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: Instant | None
    created_at: Instant
    delivered_at: Instant | None
    log: list[Attempt]


class DeliveryList(Out):
    object: Literal["list"]
    data: list[DeliveryOut]
    has_more: bool


class Replayed(Out):
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{"replayed": 3}]})
    replayed: int


def _admin(principal: Principal) -> None:
    if principal.customer is not None:
        raise BillingError("webhook endpoints are managed with an admin key that is not restricted to a customer",
                           code=ErrorCode.FORBIDDEN)


def _endpoints(request: Request) -> Endpoints:
    return Endpoints(request.app.state.services.engine)


def _now(request: Request):
    return request.app.state.services.clock()


@router.post("/webhook_endpoints", summary="Create a webhook endpoint (its secret is in the answer)",
             **documented(EndpointOut, ErrorCode.VALIDATION, ErrorCode.WEBHOOK_TARGET_FORBIDDEN))
def create_endpoint(body: EndpointIn, request: Request, principal: Admin) -> dict[str, Any]:
    _admin(principal)
    return _endpoints(request).create(body.url, event_types=body.event_types, description=body.description,
                                      secret=body.secret, now=_now(request))


@router.get("/webhook_endpoints", summary="Webhook endpoints (id order; never their secrets)",
            **documented(EndpointList))
def list_endpoints(request: Request, principal: Admin, limit: Annotated[int, Query(ge=1, le=100)] = 100,
                   starting_after: Annotated[str | None, Query(max_length=40)] = None) -> dict[str, Any]:
    _admin(principal)
    page, more = _endpoints(request).list(limit=limit, starting_after=starting_after)
    return {"object": "list", "data": page, "has_more": more}


@router.get("/webhook_endpoints/{endpoint_id}", summary="One webhook endpoint",
            **documented(EndpointOut, ErrorCode.NOT_FOUND))
def get_endpoint(endpoint_id: EndpointId, request: Request, principal: Admin) -> dict[str, Any]:
    _admin(principal)
    return _endpoints(request).get(endpoint_id)


@router.get("/webhook_endpoints/{endpoint_id}/secret", summary="The endpoint's signing secret",
            **documented(SecretOut, ErrorCode.NOT_FOUND))
def get_secret(endpoint_id: EndpointId, request: Request, principal: Admin) -> dict[str, Any]:
    _admin(principal)
    return {"id": endpoint_id, "secret": _endpoints(request).get(endpoint_id, with_secret=True)["secret"]}


@router.patch("/webhook_endpoints/{endpoint_id}",
              summary="Change an endpoint: url, event types, description, status (enabled | disabled), secret",
              **documented(EndpointOut, ErrorCode.NOT_FOUND, ErrorCode.VALIDATION,
                           ErrorCode.WEBHOOK_TARGET_FORBIDDEN))
def update_endpoint(endpoint_id: EndpointId, body: EndpointPatch, request: Request,
                    principal: Admin) -> dict[str, Any]:
    _admin(principal)
    return _endpoints(request).update(endpoint_id, now=_now(request), url=body.url, event_types=body.event_types,
                                      description=body.description, status=body.status,
                                      rotate_secret=body.rotate_secret)


@router.delete("/webhook_endpoints/{endpoint_id}", summary="Delete an endpoint (idempotent; its log stays)",
               **documented(EndpointDeleted))
def delete_endpoint(endpoint_id: EndpointId, request: Request, principal: Admin) -> dict[str, Any]:
    _admin(principal)
    _endpoints(request).delete(endpoint_id)  # a retry after a lost answer gets the same answer
    return {"id": endpoint_id, "deleted": True}


@router.get("/webhook_deliveries", summary="The delivery log: deliveries newest first, each with its attempts",
            **documented(DeliveryList))
def list_deliveries(request: Request, principal: Admin,
                    endpoint: Annotated[str | None, Query(max_length=40)] = None,
                    event: Annotated[str | None, Query(max_length=200)] = None,
                    status: DeliveryStatus | None = None,
                    limit: Annotated[int, Query(ge=1, le=100)] = 50,
                    starting_after: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None) -> dict[str, Any]:
    _admin(principal)
    page, more = deliveries.log(request.app.state.services.engine, endpoint=endpoint, event=event, status=status,
                                limit=limit, starting_after=starting_after)
    return {"object": "list", "data": page, "has_more": more}


@router.post("/webhook_deliveries/replay", summary="Send deliveries again (by event ids or since a time)",
             **documented(Replayed, ErrorCode.VALIDATION, ErrorCode.NOT_FOUND))
def replay(body: ReplayIn, request: Request, principal: Admin) -> dict[str, Any]:
    _admin(principal)
    if not body.events and body.since is None:
        raise BillingError("name the events to replay (events) or a time (since)", code=ErrorCode.VALIDATION,
                           param="events")
    engine = request.app.state.services.engine
    if body.endpoint is not None and body.endpoint != deliveries.ENV:
        _endpoints(request).get(body.endpoint)  # 404 naming it
    count = deliveries.replay(engine, to_us(_now(request)), events=body.events or (),
                              since_us=None if body.since is None else to_us(body.since),
                              endpoint=body.endpoint, status=body.status, env=request.app.state.webhook_env)
    return {"replayed": count}
