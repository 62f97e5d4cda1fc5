"""Prepaid credit grants over HTTP: the list, one, and ``billing credits grant``
(``Accounts.grant_credits``: the same checks, idempotent for the same ``id`` and amount)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from billing.api.pagination import (
    LIST_ERRORS, PageParams, customer_filter, error_responses, list_object, page_params, reject_unknown_query)
from billing.api.resources import CreditGrantList, CreditGrantObject, grant_json
from billing.api.routes import Admin, Read
from billing.errors import BillingError, ErrorCode
from billing.ledger.accounts import MAX_ID_LENGTH
from billing.store.grants_and_seats import credit_grant, grants_page

router = APIRouter(prefix="/v1", tags=["credits"])


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"customer": "acme", "amount": "25.00", "expires_at": "2027-01-01T00:00:00Z", "id": "welcome-credit"}]})

    customer: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, examples=["acme"])]
    amount: Annotated[Decimal, Field(allow_inf_nan=False, examples=["25.00"],
                                     description="In the customer's currency: more than 0, at most 10^12, "
                                                 "at most 6 decimals")]
    expires_at: AwareDatetime | None = Field(None, examples=["2027-01-01T00:00:00Z"])
    at: AwareDatetime | None = Field(None, description="Usable from (default: now)")
    name: Annotated[str, Field(max_length=200)] = "Prepaid credits"
    id: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        None, description="The grant's id (default: a new one); the same id and amount again is the same grant")
    applies_to: Annotated[list[Annotated[str, Field(min_length=1, max_length=80)]],
                          Field(min_length=1, max_length=50)] | None = Field(
        None, description="Charge keys it covers (default: every usage charge)")


@router.get("/credit_grants", response_model=CreditGrantList, responses=error_responses(*LIST_ERRORS),
            summary="Credit grants, oldest first, with what remains of each")
def list_grants(request: Request, principal: Read,
                page: Annotated[PageParams, Depends(page_params("credit_grants", str))],
                customer: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None) -> dict[str, Any]:
    with request.app.state.services.engine.connect() as conn:
        rows, balances = grants_page(conn, limit=page.limit, after=page.after, before=page.before,
                                     customer=customer_filter(principal, customer))
    return list_object(request, "credit_grants", rows, [grant_json(g, left) for g, left in balances])


@router.get("/credit_grants/{grant_id}", response_model=CreditGrantObject, dependencies=[Depends(reject_unknown_query)],
            responses=error_responses(ErrorCode.NOT_FOUND, ErrorCode.PARAMETER_UNKNOWN, ErrorCode.UNAUTHENTICATED,
                                      ErrorCode.FORBIDDEN),
            summary="One credit grant")
def get_grant(grant_id: Annotated[str, Path(min_length=1, max_length=200)], request: Request,
              principal: Read) -> dict[str, Any]:
    with request.app.state.services.engine.connect() as conn:
        found = credit_grant(conn, grant_id)
    if found is None or (principal.customer is not None and found[0].customer_id != principal.customer):
        raise BillingError(f"unknown credit grant {grant_id!r}", code=ErrorCode.NOT_FOUND)
    return grant_json(*found)


@router.post("/credit_grants", status_code=201, response_model=CreditGrantObject,
             responses=error_responses(ErrorCode.VALIDATION, ErrorCode.CUSTOMER_NOT_FOUND, ErrorCode.CONFLICT,
                                       ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN),
             summary="Grant prepaid credits (drawn before overage, soonest expiry first; `billing credits grant`)")
def grant_credits(body: GrantIn, request: Request, principal: Admin) -> dict[str, Any]:
    principal.require_customer(body.customer)
    svc = request.app.state.services
    row = svc.accounts.grant_credits(body.customer, body.amount, at=body.at or svc.clock(), expires_at=body.expires_at,
                                     name=body.name, grant_id=body.id,
                                     applies_to=tuple(body.applies_to) if body.applies_to else None)
    svc.quota.forget(body.customer)
    with svc.engine.connect() as conn:
        return grant_json(*credit_grant(conn, row.id))
