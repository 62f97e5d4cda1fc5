"""``GET /v1/customers/{id}/metering``: what the customer's plan meters, so a client can tell
which events one call must produce and whether the plan counts them.

The answer: ``customer``, ``plan`` (``id``, ``version``), ``meters`` (each meter of the plan
as the plan language writes it: ``key``, ``name``, ``event_type``, ``aggregation``,
``property``, ``filter``, ``multipliers``, ``disputes``), ``charges`` (``key``, ``meter``)
and ``task_property`` (the property naming an agent task). Scope ``read`` or ``check``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from billing.api.responses import MeteringOut, documented
from billing.api.routes import ReadOrCheck, _json
from billing.errors import ErrorCode
from billing.reservations.types import storable_text

router = APIRouter(prefix="/v1")


def metering_json(quota: Any, customer: str) -> dict[str, Any]:
    """The metering of ``customer``'s plan in force now (``billing.reservations.holds.Quota``'s
    cached context: the same plan its quota decisions use)."""
    storable_text("customer", customer)
    with quota.conns.read() as conn:
        plan = quota.context(conn, customer, quota.clock()).plan
    return {"customer": customer, "plan": {"id": plan.plan, "version": plan.version},
            "meters": [m.model_dump(mode="json") for m in plan.meters],
            "charges": [{"key": c.key, "meter": c.meter} for c in plan.charges],
            "task_property": plan.agent_limits.task_property if plan.agent_limits else "task"}


@router.get("/customers/{customer_id}/metering", tags=["customers"],
            summary="What the customer's plan meters: event types, properties, filters",
            **documented(MeteringOut, ErrorCode.CUSTOMER_NOT_FOUND, ErrorCode.SUBSCRIPTION_NOT_FOUND))
def customer_metering(customer_id: str, request: Request, principal: ReadOrCheck) -> Response:
    principal.require_customer(customer_id)
    return _json(metering_json(request.app.state.services.quota, customer_id))
