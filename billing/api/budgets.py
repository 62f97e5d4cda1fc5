"""Budgets over HTTP (``billing.budgets.service.Budgets``): create, list, delete a customer's
budgets. Scope ``admin`` to write, ``read`` to read; a key restricted to a customer acts on
its own budgets only. Bad input is 422 ``validation_error`` naming each field
(``details.problems``); a name taken 409 ``conflict``; an unknown budget 404 ``budget_not_found``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from billing.api.responses import Amount, Out, documented
from billing.api.routes import Admin, Read
from billing.api.schemas import example
from billing.budgets.service import Budgets
from billing.errors import ErrorCode
from billing.ledger.accounts import MAX_ROW_ID

router = APIRouter(prefix="/v1", tags=["budgets"])
CustomerId = Annotated[str, Path(max_length=200)]
_BUDGET = {"id": 1, "name": "research-daily-cost", "measure": "cost", "amount": "50", "window": "daily",
           "enforcement": "hard", "policy": "deny", "scope": {"property": "team", "value": "research"},
           "meter": None, "model": None, "timezone": None}


class ScopeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    property: Annotated[str, Field(max_length=64, examples=["team"])]
    value: Annotated[str, Field(max_length=200, examples=["research"])]


class BudgetIn(BaseModel):
    """Types are checked by ``billing.quota.budgets.parse_budget`` (every problem named at once)."""

    model_config = example(name="research-daily-cost", measure="cost", amount="50", window="daily",
                           enforcement="hard", scope={"property": "team", "value": "research"})
    name: Any = Field(examples=["research-daily-cost"])
    measure: Any = Field(description="billed | cost | units")
    amount: Any = Field(description="The limit: money (billed, cost) or units, a decimal string")
    window: Any = Field("period", description="daily | weekly | monthly | period")
    enforcement: Any = Field("soft", description="soft (alert) | hard (deny or downgrade)")
    policy: Any = Field(None, description="soft: alert; hard: deny (default) | downgrade")
    model: Any = Field(None, description="downgrade: the cheaper model")
    meter: Any = Field(None, description="units: the meter counted")
    scope: ScopeIn | Literal["customer"] | None = None
    timezone: Any = Field(None, description="The window's timezone (default: the customer's)")


class ScopeOut(Out):
    property: str
    value: str


class BudgetOut(Out):
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [_BUDGET]})
    id: int
    name: str
    measure: Literal["billed", "cost", "units"]
    amount: Amount
    window: str
    enforcement: Literal["soft", "hard"]
    policy: str | None
    scope: ScopeOut | None = Field(description="null: the whole customer")
    meter: str | None
    model: str | None
    timezone: str | None


class Warning_(Out):
    code: str
    message: str


class BudgetCreated(BudgetOut):
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{"customer": "acme", **_BUDGET}]})
    customer: str
    warnings: list[Warning_] | None = Field(None, description="property_not_seen: no event carries the scope's "
                                                               "property yet")


class BudgetList(Out):
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{"customer": "acme",
                                                                              "budgets": [_BUDGET]}]})
    customer: str
    budgets: list[BudgetOut]


class BudgetDeleted(Out):
    customer: str
    id: int
    deleted: Literal[True]


def _budgets(request: Request) -> Budgets:
    svc = request.app.state.services
    return Budgets(svc.engine, svc.catalog, svc.clock)


@router.post("/customers/{customer_id}/budgets", status_code=201, summary="Create a budget for the customer or a scope",
             **documented(BudgetCreated, ErrorCode.CUSTOMER_NOT_FOUND, ErrorCode.CONFLICT, status=201,
                          description="Created"))
def create_budget(customer_id: CustomerId, body: BudgetIn, request: Request,
                  principal: Admin) -> dict[str, Any]:
    principal.require_customer(customer_id)
    data = body.model_dump(exclude_none=True)
    if isinstance(body.scope, ScopeIn):
        data["scope"] = body.scope.model_dump()
    budget, warnings = _budgets(request).create(customer_id, data)
    request.app.state.services.quota.forget(customer_id)  # its decisions read the new budget
    out = {"customer": customer_id, **budget.to_json()}
    if warnings:
        out["warnings"] = warnings
    return out


@router.get("/customers/{customer_id}/budgets", summary="The customer's budgets",
            **documented(BudgetList, ErrorCode.CUSTOMER_NOT_FOUND))
def list_budgets(customer_id: CustomerId, request: Request,
                 principal: Read) -> dict[str, Any]:
    principal.require_customer(customer_id)
    return {"customer": customer_id, "budgets": [b.to_json() for b in _budgets(request).list(customer_id)]}


@router.delete("/customers/{customer_id}/budgets/{budget_id}", summary="Delete a budget",
               **documented(BudgetDeleted, ErrorCode.BUDGET_NOT_FOUND))
def delete_budget(customer_id: CustomerId,
                  budget_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)], request: Request,
                  principal: Admin) -> dict[str, Any]:
    principal.require_customer(customer_id)
    _budgets(request).delete(customer_id, budget_id)
    request.app.state.services.quota.forget(customer_id)
    return {"customer": customer_id, "id": budget_id, "deleted": True}
