"""Contracts over HTTP (``billing.contracts.service.Contracts``): a subscription's dated
plan overrides, coupons and their redemptions, term commitments, add-on subscriptions. Typed bodies and answers;
every check is the service's (``contract_invalid`` with each problem in ``details``,
``coupon_not_found``, ``period_invoiced``, ``currency_mismatch``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from billing.api.routes import Admin, Read
from billing.api.schemas import example
from billing.contracts.service import MAX_OVERRIDES, MAX_PERIODS, Contracts
from billing.contracts.views import (
    addon_json, commitment_json, contract_json, coupon_json, override_json, redemption_json)
from billing.api.errors import error_responses
from billing.api.responses import PlanRef
from billing.errors import BillingError, ErrorCode
from billing.errors import ErrorCode as E
from billing.ledger.accounts import MAX_ROW_ID

router = APIRouter(prefix="/v1", tags=["contracts"])
SubscriptionId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
Number = Annotated[Decimal, Field(allow_inf_nan=False)]
Scope = Literal["usage", "all"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OverrideIn(_Strict):
    path: Annotated[str, Field(min_length=1, max_length=300, examples=["charges/premium_requests/price/unit_price"])]
    value: Any = Field(description="The new value as in a plan file (numbers as strings keep exact decimals); "
                                   "null removes an optional value")
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = None


class OverridesIn(_Strict):
    model_config = example(overrides=[{"path": "charges/premium_requests/price/unit_price", "value": "0.02",
                                       "starts_at": "2026-10-01T00:00:00Z"}])
    overrides: Annotated[list[OverrideIn], Field(min_length=1, max_length=MAX_OVERRIDES)]


class OverrideOut(BaseModel):
    id: int
    subscription: int
    path: str
    value: Any
    starts_at: str
    ends_at: str | None


class CouponIn(_Strict):
    model_config = example(code="WELCOME10", name="Welcome", percent="10", duration="repeating", periods=3)
    code: Annotated[str, Field(min_length=1, max_length=80)]
    name: Annotated[str, Field(max_length=200)] = ""
    percent: Number | None = Field(None, description="Percent off: more than 0, at most 100")
    amount: Number | None = Field(None, description="Amount off, in `currency`")
    currency: Annotated[str, Field(max_length=16)] | None = None
    duration: Literal["once", "repeating", "forever"]
    periods: Annotated[int, Field(ge=1, le=MAX_PERIODS)] | None = None
    applies_to: Scope = "all"


class CouponOut(BaseModel):
    code: str
    name: str
    percent: str | None
    amount: str | None
    currency: str | None
    duration: str
    periods: int | None
    applies_to: str


class RedeemIn(_Strict):
    model_config = example(code="WELCOME10")
    code: Annotated[str, Field(min_length=1, max_length=80)]
    at: AwareDatetime | None = None


class RedemptionOut(BaseModel):
    id: int
    coupon: str
    subscription: int
    redeemed_at: str
    ends_at: str | None


class RedemptionWithCoupon(RedemptionOut):
    coupon: CouponOut  # type: ignore[assignment]


class CommitmentIn(_Strict):
    model_config = example(amount="12000", starts_at="2026-01-01T00:00:00Z", ends_at="2027-01-01T00:00:00Z")
    amount: Number
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    applies_to: Scope = "all"
    name: Annotated[str, Field(min_length=1, max_length=200)] = "Contract commitment"


class CommitmentOut(BaseModel):
    id: int
    subscription: int
    name: str
    amount: str
    currency: str
    starts_at: str
    ends_at: str
    applies_to: str


class AddOnIn(_Strict):
    model_config = example(plan="priority-support", at="2026-10-01T00:00:00Z")
    plan: Annotated[str, Field(min_length=1, max_length=80)]
    version: Annotated[int, Field(ge=1)] | None = None
    at: AwareDatetime | None = None


class AddOnEndIn(_Strict):
    model_config = example(at="2026-12-01T00:00:00Z")
    at: AwareDatetime | None = None


class AddOnOut(BaseModel):
    id: int
    subscription: int
    plan: PlanRef
    started_at: str
    ended_at: str | None


class ContractOut(BaseModel):
    subscription: int
    overrides: list[OverrideOut]
    coupons: list[RedemptionWithCoupon]
    commitments: list[CommitmentOut]
    addons: list[AddOnOut]


def _contracts(request: Request) -> Contracts:
    svc = request.app.state.services
    return Contracts(svc.engine, svc.catalog)


def _customer_of(request: Request, principal, subscription_id: int) -> str:
    """The subscription's customer, once the key may act on it."""
    customer = request.app.state.services.accounts.subscription(subscription_id).customer_id
    principal.require_customer(customer)
    return customer


@router.get("/subscriptions/{subscription_id}/contract", response_model=ContractOut,
            responses=error_responses(E.SUBSCRIPTION_NOT_FOUND),
            summary="The subscription's contract: overrides, coupons, term commitments")
def get_contract(subscription_id: SubscriptionId, request: Request, principal: Read) -> dict[str, Any]:
    _customer_of(request, principal, subscription_id)
    return contract_json(_contracts(request).contract(subscription_id))


@router.post("/subscriptions/{subscription_id}/overrides", status_code=201, response_model=list[OverrideOut],
             responses=error_responses(E.SUBSCRIPTION_NOT_FOUND, E.CONTRACT_INVALID, E.PERIOD_INVOICED),
             summary="Override values of the subscription's plan version for a time (all or none)")
def add_overrides(subscription_id: SubscriptionId, body: OverridesIn, request: Request,
                  principal: Admin) -> list[dict[str, Any]]:
    customer = _customer_of(request, principal, subscription_id)
    svc = request.app.state.services
    rows = _contracts(request).add_overrides(subscription_id, [o.model_dump() for o in body.overrides],
                                             now=svc.clock())
    svc.quota.forget(customer)  # its quota decisions read the new plan
    return [override_json(r) for r in rows]


@router.post("/coupons", status_code=201, response_model=CouponOut, summary="Create a coupon (idempotent)",
             responses=error_responses(E.CONTRACT_INVALID, E.CONFLICT))
def create_coupon(body: CouponIn, request: Request, principal: Admin) -> dict[str, Any]:
    principal.require_customer(None)  # coupons are not one customer's
    row = _contracts(request).create_coupon(
        body.code, duration=body.duration, percent=body.percent, amount=body.amount, currency=body.currency,
        periods=body.periods, applies_to=body.applies_to, name=body.name, now=request.app.state.services.clock())
    return coupon_json(row)


@router.post("/subscriptions/{subscription_id}/coupons", status_code=201, response_model=RedemptionOut,
             responses=error_responses(E.SUBSCRIPTION_NOT_FOUND, E.COUPON_NOT_FOUND, E.CONTRACT_INVALID,
                                       E.CURRENCY_MISMATCH, E.CONFLICT),
             summary="Redeem a coupon on the subscription (from the billing period containing `at`)")
def redeem_coupon(subscription_id: SubscriptionId, body: RedeemIn, request: Request,
                  principal: Admin) -> dict[str, Any]:
    _customer_of(request, principal, subscription_id)
    svc = request.app.state.services
    now = svc.clock()
    return redemption_json(_contracts(request).redeem(subscription_id, body.code, at=body.at or now, now=now))


@router.post("/subscriptions/{subscription_id}/commitments", status_code=201, response_model=CommitmentOut,
             responses=error_responses(E.SUBSCRIPTION_NOT_FOUND, E.CONTRACT_INVALID, E.PERIOD_INVOICED),
             summary="Commit to an amount over a contract term (owed pro rata by its billing periods)")
def add_commitment(subscription_id: SubscriptionId, body: CommitmentIn, request: Request,
                   principal: Admin) -> dict[str, Any]:
    _customer_of(request, principal, subscription_id)
    contracts = _contracts(request)
    row = contracts.add_commitment(subscription_id, body.amount, starts_at=body.starts_at, ends_at=body.ends_at,
                                   applies_to=body.applies_to, name=body.name,
                                   now=request.app.state.services.clock())
    return commitment_json(row, contracts.contract(subscription_id)["currency"])


@router.post("/subscriptions/{subscription_id}/addons", status_code=201, response_model=AddOnOut,
             responses=error_responses(E.SUBSCRIPTION_NOT_FOUND, E.PLAN_NOT_FOUND, E.CONTRACT_INVALID,
                                       E.CURRENCY_MISMATCH, E.CONFLICT),
             summary="Add an add-on subscription (a fees-only plan) rated into this subscription's invoices")
def add_addon(subscription_id: SubscriptionId, body: AddOnIn, request: Request, principal: Admin) -> dict[str, Any]:
    _customer_of(request, principal, subscription_id)
    now = request.app.state.services.clock()
    return addon_json(_contracts(request).add_addon(subscription_id, body.plan, at=body.at or now,
                                                    version=body.version, now=now))


@router.post("/subscriptions/{subscription_id}/addons/{addon_id}/end", response_model=AddOnOut,
             responses=error_responses(E.SUBSCRIPTION_NOT_FOUND, E.CONTRACT_INVALID, E.CONFLICT),
             summary="End an add-on subscription (its last period is prorated)")
def end_addon(subscription_id: SubscriptionId, addon_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)], body: AddOnEndIn,
              request: Request, principal: Admin) -> dict[str, Any]:
    _customer_of(request, principal, subscription_id)
    contracts = _contracts(request)
    if addon_id not in {a.id for a in contracts.contract(subscription_id)["addons"]}:
        raise BillingError(f"subscription {subscription_id} has no add-on {addon_id}",
                           code=ErrorCode.SUBSCRIPTION_NOT_FOUND)
    return addon_json(contracts.end_addon(addon_id, at=body.at or request.app.state.services.clock()))
