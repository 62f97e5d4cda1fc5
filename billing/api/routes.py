"""HTTP routes: thin wrappers over the services (Ledger, Quota, Accounts, Invoicing)."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Annotated, Any

import orjson

from fastapi import APIRouter, Body, Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError

from billing.api.async_events import prefers_async, queue_events
from billing.api.telemetry import count_decision
from billing.api.auth import Principal
from billing.api import responses as r
from billing.api.errors import json_bytes
from billing.api.responses import documented
from billing.api.schemas import CommitIn, CustomerIn, EventsIn, QuotaIn, ReleaseIn, ReserveIn, SeatsIn, SubscribeIn
from billing.errors import BillingError, ErrorCode
from billing.errors import ErrorCode as E
from billing.ledger.accounts import MAX_ROW_ID
from billing.store.models import Customer, SeatChange, Subscription
from billing.quota.decide import Outcome


def _api_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key of ``Authorization: Bearer <key>``, else of ``X-API-Key``."""
    key = authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " else None
    return key or x_api_key


def _principal(request: Request) -> Principal:
    headers = request.headers
    return request.app.state.keys.authenticate(_api_key(headers.get("authorization"), headers.get("x-api-key")))


def scoped(*scopes: str):
    async def dependency(request: Request) -> Principal:  # cached lookups: no thread hop
        principal = _principal(request)
        if not principal.allows(*scopes):
            raise BillingError(f"this API key's scope ({principal.scope}) does not allow this; needs "
                               f"{' or '.join(scopes)}", code=ErrorCode.FORBIDDEN)
        return principal
    return dependency


Ingest = Annotated[Principal, Depends(scoped("ingest"))]
Check = Annotated[Principal, Depends(scoped("check"))]
Read = Annotated[Principal, Depends(scoped("read"))]
ReadOrCheck = Annotated[Principal, Depends(scoped("read", "check"))]
Admin = Annotated[Principal, Depends(scoped("admin"))]

router = APIRouter(prefix="/v1")


def _svc(request: Request):
    return request.app.state.services


def _iso(t) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t is not None else None


def _customer_json(c: Customer) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "timezone": c.timezone, "currency": c.currency,
            "created_at": _iso(c.created_at)}


def _subscription_json(s: Subscription) -> dict[str, Any]:
    return {"id": s.id, "customer": s.customer_id, "plan": {"id": s.plan_id, "version": s.plan_version},
            "status": s.status, "started_at": _iso(s.started_at), "ended_at": _iso(s.ended_at),
            "trial_end": _iso(s.trial_end)}


def _json(data: Any, decision: dict[str, Any] | None = None) -> Response:
    """Serialise plain JSON directly (our payloads are already JSON-ready: skips FastAPI's
    generic encoder); a deny that waiting clears carries ``Retry-After``."""
    retry = _retry_after(decision) if decision is not None else None
    headers = {"Retry-After": retry} if retry is not None else None
    try:
        payload = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:  # text UTF-8 cannot carry (an event id the client sent, echoed)
        payload = json_bytes(data)
    return Response(payload, media_type="application/json", headers=headers)


def _retry_after(decision: dict[str, Any]) -> str | None:
    if decision.get("outcome") == Outcome.DENY and decision.get("retry_after") is not None:
        return str(max(1, math.ceil(decision["retry_after"])))
    return None


# ------------------------------------------------------------------------- events

def _events_body() -> dict[str, Any]:
    from billing.api.formats_routes import CLOUDEVENTS_CONTENT
    from billing.api.openapi import event_schemas

    events = {"type": "array", "maxItems": 10_000, "items": {"$ref": "#/components/schemas/UsageEvent"}}
    content = {"application/json": {"schema": {"anyOf": [
        {"type": "object", "required": ["events"], "additionalProperties": False, "properties": {"events": events}},
        events]}, "example": {"events": event_schemas()["UsageEvent"]["examples"]}}}
    queued = {"description": "`Prefer: respond-async`: persisted on the event log (recorded by `billing ingest-worker`)",
              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventsQueued"}}}}
    return {"requestBody": {"required": True, "content": {**content, **CLOUDEVENTS_CONTENT}},
            "responses": {"202": queued}}


_EVENTS_IN: TypeAdapter = TypeAdapter(EventsIn | list[Any])


@router.post("/events", tags=["events"], summary="Record a batch of usage events (idempotent per event id); "
             "CloudEvents too (structured and batch)", openapi_extra=_events_body(),
             **documented(r.EventsOut, E.EVENT_INVALID, E.CUSTOMER_NOT_FOUND, E.EVENT_LOG_NOT_CONFIGURED,
                          description="One result per event, in order (a bad event is its own rejection); "
                                      "202 with `Prefer: respond-async`"))
def post_events(body: Annotated[Any, Body()], request: Request, principal: Ingest) -> Response:
    from billing.api.formats.cloudevents import media_type
    from billing.api.formats_routes import cloudevents_answer

    media = media_type(request.headers.get("content-type"))
    if media is not None:
        return _json(cloudevents_answer(body, media, request, principal))
    try:
        body = _EVENTS_IN.validate_python(body)
    except ValidationError as exc:  # as FastAPI answers a body that fails its model
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)],
                                     body=body) from None
    events = body.events if isinstance(body, EventsIn) else body
    if len(events) > 10_000:
        raise BillingError("at most 10,000 events per batch", code=ErrorCode.VALIDATION)
    if principal.customer is not None:
        for event in events:
            principal.require_customer(event.get("customer") if isinstance(event, dict) else None)
    if prefers_async(request):  # durably queued on the log (202), recorded by billing ingest-worker
        return queue_events(request, events)
    result = _svc(request).ledger.record(events)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.recorded(result.counts)
    results = result.results
    out = result.to_json()
    out.pop("errors", None)
    out["results"] = [r.to_json() for r in results]
    return _json(out)


# -------------------------------------------------------------------------- quota

def _json_body(model) -> dict[str, Any]:
    """The OpenAPI request body of a route that validates ``model`` itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


@router.post("/quota/check", tags=["quota"], summary="May this customer make this call now, on which lane?",
             openapi_extra=_json_body(QuotaIn),
             **documented(r.Decision, E.CUSTOMER_NOT_FOUND, E.SUBSCRIPTION_NOT_FOUND, E.NOT_FOUND))
async def quota_check(request: Request) -> Response:
    decision = await check_decision(request.app.state, request.headers.get("authorization"),
                                    request.headers.get("x-api-key"), await request.body())
    return _json(decision, decision)


async def quota_check_fast(app: Any, scope: dict, body: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """``quota_check`` for ``billing.api.fastpath`` (the raw ASGI scope: no Request object)."""
    auth = api_key = None
    for name, value in scope["headers"]:  # the first of each, as Starlette's headers.get
        if name == b"authorization":
            if auth is None:
                auth = value.decode("latin-1")
        elif name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1")
    decision = await check_decision(app.state, auth, api_key, body)
    retry = _retry_after(decision)
    return 200, orjson.dumps(decision, option=orjson.OPT_NON_STR_KEYS), \
        [] if retry is None else [(b"retry-after", retry.encode())]


async def check_decision(state: Any, auth: str | None, api_key: str | None, body: bytes) -> dict[str, Any]:
    # the hot path: authentication and body validation inline (the same rules as the
    # dependencies and models of the other routes, without FastAPI's per-request machinery)
    principal = state.keys.authenticate(_api_key(auth, api_key))
    if not principal.allows("check"):
        raise BillingError(f"this API key's scope ({principal.scope}) does not allow this; needs check",
                           code=ErrorCode.FORBIDDEN)
    try:
        body = QuotaIn.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    principal.require_customer(body.customer)
    quota = state.services.quota
    if quota.inline_reads:  # SQLite: a few local lock-free reads, cheaper inline than a thread hop
        decision = quota.check(body.customer, body.key, body.quantity, model=body.model, task=body.task,
                               tokens=body.tokens, cost=body.cost, steps=body.steps, retry=body.retry,
                               depth=body.depth, properties=body.properties).to_json()
    else:  # over a network (PostgreSQL): concurrent checks share a thread hop and a round trip
        decision = (await state.checks.check(body.customer, body.key, body.quantity, model=body.model, task=body.task,
                                             tokens=body.tokens, cost=body.cost, steps=body.steps, retry=body.retry,
                                             depth=body.depth, properties=body.properties)).to_json()
    count_decision(state, decision)
    return decision


@router.post("/quota/reserve", tags=["quota"], summary="Decide and hold the estimate until commit/release/expiry",
             **documented(r.ReservationOut, E.CUSTOMER_NOT_FOUND, E.SUBSCRIPTION_NOT_FOUND, E.NOT_FOUND))
def quota_reserve(body: ReserveIn, request: Request, principal: Check) -> Response:
    principal.require_customer(body.customer)
    r = _svc(request).quota.reserve(body.customer, body.key, body.quantity, ttl=body.ttl_seconds,
                                    request_id=body.request_id, model=body.model, task=body.task,
                                    tokens=body.tokens, cost=body.cost, steps=body.steps, retry=body.retry,
                                    depth=body.depth, properties=body.properties).to_json()
    count_decision(request.app.state, r["decision"])
    return _json(r, r["decision"])


@router.post("/quota/commit", tags=["quota"], summary="Record the actual usage (one event) and settle the hold",
             **documented(r.CommitOut, E.RESERVATION_NOT_FOUND, E.EVENT_CONFLICT, E.EVENT_INVALID, E.EVENT_ARCHIVED))
def quota_commit(body: CommitIn, request: Request, principal: Check) -> Response:
    # a key restricted to one customer may only settle that customer's holds (checked in the transaction)
    with _foreign_reservation_unknown(principal, body.reservation_id):
        return _json(_svc(request).quota.commit(body.reservation_id, body.event, customer=principal.customer))


@router.post("/quota/release", tags=["quota"], summary="Return the held units now",
             **documented(r.ReleaseOut, E.RESERVATION_NOT_FOUND, E.INVALID_TRANSITION))
def quota_release(body: ReleaseIn, request: Request, principal: Check) -> Response:
    with _foreign_reservation_unknown(principal, body.reservation_id):
        return _json(_svc(request).quota.release(body.reservation_id, customer=principal.customer))


@contextmanager
def _foreign_reservation_unknown(principal: Principal, reservation_id: str):
    """Another customer's hold is, to a key restricted to one customer, the same 404 as a
    hold that does not exist (a 403 would tell it the id exists)."""
    try:
        yield
    except BillingError as exc:
        if principal.customer is not None and exc.code == ErrorCode.FORBIDDEN:
            raise BillingError(f"unknown reservation {reservation_id!r}",
                               code=ErrorCode.RESERVATION_NOT_FOUND) from None
        raise


# ---------------------------------------------------------------------- customers

@router.post("/customers", tags=["customers"], status_code=201, summary="Create a customer (idempotent)",
             **documented(r.CustomerOut, E.CUSTOMER_EXISTS, status=201, description="Created (or the same, again)"))
def create_customer(body: CustomerIn, request: Request, principal: Admin) -> dict[str, Any]:
    principal.require_customer(body.id)
    svc = _svc(request)
    row = svc.accounts.create_customer(body.id, name=body.name, timezone=body.timezone, currency=body.currency,
                                       now=svc.clock())
    return _customer_json(row)


@router.get("/customers/{customer_id}", tags=["customers"], summary="A customer and its current subscription",
            **documented(r.CustomerWithSubscription, E.CUSTOMER_NOT_FOUND))
def get_customer(customer_id: str, request: Request, principal: Read) -> dict[str, Any]:
    principal.require_customer(customer_id)
    svc = _svc(request)
    out = _customer_json(svc.accounts.customer(customer_id))
    try:
        out["subscription"] = _subscription_json(svc.accounts.current_subscription(customer_id, svc.clock()))
    except BillingError:
        out["subscription"] = None
    return out


@router.post("/customers/{customer_id}/subscriptions", tags=["customers"], status_code=201,
             summary="Subscribe the customer to a plan (the version in force, or a pinned one)",
             **documented(r.SubscribedOut, E.CUSTOMER_NOT_FOUND, E.PLAN_NOT_FOUND, E.SUBSCRIPTION_EXISTS,
                          E.CURRENCY_MISMATCH, status=201, description="Subscribed"))
def subscribe(customer_id: str, body: SubscribeIn, request: Request, principal: Admin) -> dict[str, Any]:
    principal.require_customer(customer_id)
    svc = _svc(request)
    sub = svc.accounts.subscribe(customer_id, body.plan, at=body.at or svc.clock(), seats=body.seats,
                                 version=body.version)
    svc.quota.forget(customer_id)
    return {**_subscription_json(sub), "seats": body.seats}


@router.post("/customers/{customer_id}/seats", tags=["customers"], summary="Change the seat count from now (or at)",
             **documented(r.SeatsOut, E.CUSTOMER_NOT_FOUND, E.SUBSCRIPTION_NOT_FOUND, E.PERIOD_INVOICED))
def change_seats(customer_id: str, body: SeatsIn, request: Request, principal: Admin) -> dict[str, Any]:
    principal.require_customer(customer_id)
    svc = _svc(request)
    change: SeatChange = svc.accounts.change_seats(customer_id, body.seats, at=body.at or svc.clock())
    svc.quota.forget(customer_id)
    return {"customer": customer_id, "subscription_id": change.subscription_id, "seats": change.seats,
            "effective_at": _iso(change.effective_at)}


@router.get("/customers/{customer_id}/usage", tags=["customers"],
            summary="Usage this period: per meter and charge used, held, included, remaining, spend",
            **documented(r.UsageOut, E.CUSTOMER_NOT_FOUND, E.SUBSCRIPTION_NOT_FOUND))
def customer_usage(customer_id: str, request: Request, principal: ReadOrCheck) -> Response:
    principal.require_customer(customer_id)
    return _json(_svc(request).quota.usage(customer_id))


# ----------------------------------------------------------------------- invoices

# the list of invoices and credit notes: billing.api.invoices_routes

@router.get("/invoices/{invoice_id}", tags=["invoices"], summary="One invoice with its lines",
            **documented(r.InvoiceOut, E.INVOICE_NOT_FOUND))
def get_invoice(invoice_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)],  # the id column is a 32-bit INTEGER
                request: Request, principal: Read) -> dict[str, Any]:
    from billing.invoicing.service import invoice_json

    try:
        inv, lines = _svc(request).invoicing.get(invoice_id)
    except BillingError as exc:
        if exc.code == ErrorCode.INVOICE_NOT_FOUND:
            raise _unknown_invoice(invoice_id) from None
        raise
    if principal.customer is not None and inv.customer_id != principal.customer:
        raise _unknown_invoice(invoice_id)  # the same answer as for an id that does not exist
    return invoice_json(inv, lines)


def _unknown_invoice(invoice_id: int) -> BillingError:
    return BillingError(f"unknown invoice {invoice_id}", code=ErrorCode.INVOICE_NOT_FOUND)


# -------------------------------------------------------------------------- plans

def _plan_summary(plan) -> dict[str, Any]:
    return {"plan": plan.plan, "version": plan.version, "name": plan.name, "currency": plan.currency,
            "effective_from": _iso(plan.effective_from), "description": plan.description,
            "meters": [m.key for m in plan.meters], "charges": [c.key for c in plan.charges]}


@router.get("/plans", tags=["plans"], summary="Every version of every plan in the catalog",
            **documented(r.PlansOut))
def list_plans(request: Request, principal: Read) -> dict[str, Any]:
    catalog = _svc(request).catalog
    return {"plans": [_plan_summary(p) for pid in catalog.plan_ids() for p in catalog.versions(pid)]}


@router.get("/plans/{plan_id}", tags=["plans"], summary="A plan's versions in full",
            **documented(r.PlanOut, E.PLAN_NOT_FOUND))
def get_plan(plan_id: str, request: Request, principal: Read) -> dict[str, Any]:
    catalog = _svc(request).catalog
    return {"plan": plan_id, "versions": [p.model_dump(mode="json") for p in catalog.versions(plan_id)]}
