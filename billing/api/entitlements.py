"""``POST /v1/entitlements/check``: does this customer have this feature, and its value?

The plan in force is read from the quota's cached customer context (the same plan its
decisions use); the answer comes from ``billing.quota.entitlements.lookup`` on the plan's
``features``. A metered feature is answered by the quota decision on its meter or charge
(one unit, read-only: ``Quota.check``), whose answer is included. Scope ``check``
(restricted to one customer when the key is); an unknown customer is 404
``customer_not_found``; a feature the plan does not list is ``has: false``, ``kind:
absent``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from billing.api.errors import error_responses
from billing.api.responses import PlanRef
from billing.api.routes import Check
from billing.errors import ErrorCode
from billing.api.schemas import CustomerId, Key, Strict, example
from billing.quota.entitlements import answer_metered, lookup
from billing.reservations.types import storable_text

router = APIRouter(prefix="/v1")


class EntitlementIn(Strict):
    model_config = example(customer="acme", feature="sso")
    customer: CustomerId
    feature: Key


class EntitlementOut(BaseModel):
    customer: str
    plan: PlanRef
    feature: str
    kind: Literal["boolean", "static", "metered", "absent"]
    has: bool
    value: bool | int | str | None  # boolean / static features: the plan's value
    metered: str | None  # metered features: the meter or charge the quota decision was asked on
    decision: dict[str, Any] | None  # metered features: that decision (as POST /v1/quota/check answers)


def entitlement_json(quota: Any, customer: str, feature: str,
                     overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``customer``'s entitlement to ``feature`` now, from the plan of the quota's cached
    context (``overrides``: per-customer features layered on the plan's)."""
    storable_text("customer", customer)
    with quota.conns.read() as conn:
        plan = quota.context(conn, customer, quota.clock()).plan
    answer = lookup(plan.features, feature, overrides)
    decision = None
    if answer.metered is not None:
        decision = quota.check(customer, answer.metered, 1)
        answer = answer_metered(answer, decision.granted)
    return {"customer": customer, "plan": {"id": plan.plan, "version": plan.version}, **answer.to_json(),
            "decision": None if decision is None else decision.to_json()}


@router.post("/entitlements/check", tags=["quota"], response_model=EntitlementOut,
             responses=error_responses(ErrorCode.CUSTOMER_NOT_FOUND, ErrorCode.SUBSCRIPTION_NOT_FOUND),
             summary="Does this customer have this feature (and its value) under its plan?")
def entitlements_check(body: EntitlementIn, request: Request, principal: Check) -> dict[str, Any]:
    principal.require_customer(body.customer)
    return entitlement_json(request.app.state.services.quota, body.customer, body.feature)
