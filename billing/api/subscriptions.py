"""Subscriptions over HTTP: the list, one, and the writes of ``billing subscriptions ...``
(create, seats, change-plan, cancel), each calling the same ``Accounts`` method the CLI
calls. A write names the subscription; it must be its customer's subscription in force at
``at`` (404 ``subscription_not_found`` when it is not, as the CLI says of a customer with
none). Every POST takes ``Idempotency-Key`` (``billing.api.idempotency``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from billing.api.pagination import (
    LIST_ERRORS, PageParams, customer_filter, error_responses, list_object, page_params, reject_unknown_query)
from billing.api.resources import SubscriptionList, SubscriptionObject, subscription_json
from billing.api.routes import Admin, Read
from billing.errors import BillingError, ErrorCode
from billing.ledger.accounts import MAX_ID_LENGTH, MAX_ROW_ID, MAX_SEATS
from billing.store.grants_and_seats import seat_histories
from billing.store.pages import subscriptions_page

router = APIRouter(prefix="/v1", tags=["subscriptions"])
SubscriptionId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
_WRITE_ERRORS = (ErrorCode.VALIDATION, ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN, ErrorCode.SUBSCRIPTION_NOT_FOUND,
                 ErrorCode.PERIOD_INVOICED, ErrorCode.IDEMPOTENCY_KEY_REUSED)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubscriptionIn(_Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"customer": "acme", "plan": "support-chatbot", "seats": 3, "at": "2026-10-01T00:00:00Z"}]})

    customer: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, examples=["acme"])]
    plan: Annotated[str, Field(min_length=1, max_length=80, examples=["support-chatbot"])]
    version: Annotated[int, Field(ge=1)] | None = Field(None, description="Pin a version (default: in force at `at`)")
    seats: Annotated[int, Field(ge=0, le=MAX_SEATS)] = 1
    at: AwareDatetime | None = Field(None, description="Start (default: now)", examples=["2026-10-01T00:00:00Z"])


class SubscriptionAtIn(_Strict):
    at: AwareDatetime | None = Field(None, description="When (default: now)", examples=["2026-10-16T00:00:00Z"])


class SeatChangeIn(SubscriptionAtIn):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"seats": 5, "at": "2026-10-16T00:00:00Z"}]})

    seats: Annotated[int, Field(ge=0, le=MAX_SEATS, examples=[5])]


class ChangePlanIn(SubscriptionAtIn):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"plan": "team", "at": "2026-10-20T00:00:00Z"}]})

    plan: Annotated[str, Field(min_length=1, max_length=80, examples=["team"])]
    version: Annotated[int, Field(ge=1)] | None = None


def _seats_now(request: Request, rows: list, now: datetime) -> dict[int, int | None]:
    """Each subscription's seats held now (at its end, for an ended one)."""
    with request.app.state.services.engine.connect() as conn:
        histories = seat_histories(conn, [r.id for r in rows])
    out: dict[int, int | None] = {}
    for r in rows:
        history = histories.get(r.id, [])
        if r.ended_at is None or r.ended_at > now:
            held = [n for t, n in history if t <= now]
        else:
            held = [n for t, n in history if t < r.ended_at]
        out[r.id] = held[-1] if held else (history[0][1] if history else None)
    return out


def _json(request: Request, rows: list) -> list[dict[str, Any]]:
    seats = _seats_now(request, rows, request.app.state.services.clock())
    return [subscription_json(r, seats[r.id]) for r in rows]


@router.get("/subscriptions", response_model=SubscriptionList, responses=error_responses(*LIST_ERRORS),
            summary="Subscriptions, oldest first, of a customer, status or plan")
def list_subscriptions(request: Request, principal: Read,
                       page: Annotated[PageParams, Depends(page_params("subscriptions"))],
                       customer: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
                       status: Literal["active", "canceled", "replaced"] | None = None,
                       plan: Annotated[str | None, Query(max_length=80)] = None) -> dict[str, Any]:
    with request.app.state.services.engine.connect() as conn:
        rows = subscriptions_page(conn, limit=page.limit, after=page.after, before=page.before,
                                  customer=customer_filter(principal, customer), status=status, plan=plan)
    return list_object(request, "subscriptions", rows, _json(request, rows.rows))


def _subscription(request: Request, principal, subscription_id: int):
    """The subscription, once this key may see it (another customer's: the same 404 as none)."""
    try:
        sub = request.app.state.services.accounts.subscription(subscription_id)
    except BillingError:
        sub = None
    if sub is None or (principal.customer is not None and sub.customer_id != principal.customer):
        raise BillingError(f"unknown subscription {subscription_id}", code=ErrorCode.SUBSCRIPTION_NOT_FOUND)
    return sub


@router.get("/subscriptions/{subscription_id}", response_model=SubscriptionObject,
            dependencies=[Depends(reject_unknown_query)],
            responses=error_responses(ErrorCode.SUBSCRIPTION_NOT_FOUND, ErrorCode.VALIDATION,
                                      ErrorCode.PARAMETER_UNKNOWN, ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN),
            summary="One subscription")
def get_subscription(subscription_id: SubscriptionId, request: Request, principal: Read) -> dict[str, Any]:
    return _json(request, [_subscription(request, principal, subscription_id)])[0]


@router.post("/subscriptions", status_code=201, response_model=SubscriptionObject,
             responses=error_responses(*_WRITE_ERRORS, ErrorCode.CUSTOMER_NOT_FOUND, ErrorCode.PLAN_NOT_FOUND,
                                       ErrorCode.SUBSCRIPTION_EXISTS, ErrorCode.CURRENCY_MISMATCH),
             summary="Subscribe a customer to a plan (`billing subscriptions create`)")
def create_subscription(body: SubscriptionIn, request: Request, principal: Admin) -> dict[str, Any]:
    principal.require_customer(body.customer)
    svc = request.app.state.services
    sub = svc.accounts.subscribe(body.customer, body.plan, at=body.at or svc.clock(), seats=body.seats,
                                 version=body.version)
    svc.quota.forget(body.customer)
    return subscription_json(sub, body.seats)


def _in_force(request: Request, principal, subscription_id: int, at: datetime):
    """The subscription, which must be its customer's in force at ``at``."""
    sub = _subscription(request, principal, subscription_id)
    current = request.app.state.services.accounts.current_subscription(sub.customer_id, at)
    if current.id != sub.id:
        raise BillingError(f"subscription {subscription_id} is not in force at {at.isoformat()} (subscription "
                           f"{current.id} is)", code=ErrorCode.SUBSCRIPTION_NOT_FOUND)
    return sub


@router.post("/subscriptions/{subscription_id}/seats", response_model=SubscriptionObject,
             responses=error_responses(*_WRITE_ERRORS),
             summary="Change the seat count from `at` on, prorated (`billing subscriptions seats`)")
def change_seats(subscription_id: SubscriptionId, body: SeatChangeIn, request: Request, principal: Admin) -> dict[str, Any]:
    svc = request.app.state.services
    at = body.at or svc.clock()
    sub = _in_force(request, principal, subscription_id, at)
    svc.accounts.change_seats(sub.customer_id, body.seats, at=at)
    svc.quota.forget(sub.customer_id)
    return _json(request, [svc.accounts.subscription(sub.id)])[0]


@router.post("/subscriptions/{subscription_id}/change_plan", status_code=201, response_model=SubscriptionObject,
             responses=error_responses(*_WRITE_ERRORS, ErrorCode.PLAN_NOT_FOUND, ErrorCode.CURRENCY_MISMATCH),
             summary="End the subscription at `at` and start another plan with its seats: the new "
                     "subscription (`billing subscriptions change-plan`)")
def change_plan(subscription_id: SubscriptionId, body: ChangePlanIn, request: Request,
                principal: Admin) -> dict[str, Any]:
    svc = request.app.state.services
    at = body.at or svc.clock()
    sub = _in_force(request, principal, subscription_id, at)
    new = svc.accounts.change_plan(sub.customer_id, body.plan, at=at, version=body.version)
    svc.quota.forget(sub.customer_id)
    return _json(request, [new])[0]


@router.post("/subscriptions/{subscription_id}/cancel", response_model=SubscriptionObject,
             responses=error_responses(*_WRITE_ERRORS),
             summary="End the subscription at `at` (its last part is billed at the next close; "
                     "`billing subscriptions cancel`)")
def cancel_subscription(subscription_id: SubscriptionId, request: Request, principal: Admin,
                        body: Annotated[SubscriptionAtIn | None, Body(
                            examples=[{"at": "2026-10-25T00:00:00Z"}])] = None) -> dict[str, Any]:
    svc = request.app.state.services
    at = (body.at if body else None) or svc.clock()
    sub = _in_force(request, principal, subscription_id, at)
    ended = svc.accounts.cancel(sub.customer_id, at=at)
    svc.quota.forget(sub.customer_id)
    return _json(request, [ended])[0]
