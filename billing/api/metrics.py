"""``GET /v1/quota/metrics``: commits that arrived after their hold expired (late commits).

A late commit is recorded and counted (the usage happened), but its hold's units may have
been granted again meanwhile, so the customer can end above its limit: a steady count says
the holds' ``ttl_seconds`` is shorter than the calls they guard.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import AwareDatetime

from billing.api.responses import LateCommitsOut, documented
from billing.api.routes import Read, _json
from billing.errors import BillingError, ErrorCode

router = APIRouter(prefix="/v1")


@router.get("/quota/metrics", tags=["quota"],
            summary="Late commits (after their hold expired) in a window, per customer and meter",
            **documented(LateCommitsOut))
def quota_metrics(request: Request, principal: Read,
                  since: Annotated[AwareDatetime | None, Query(description="Default: 24 hours before until")] = None,
                  until: Annotated[AwareDatetime | None, Query(description="Default: now")] = None,
                  customer: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    svc = request.app.state.services
    if principal.customer is not None:  # a key restricted to one customer sees only that one
        if customer is not None:
            principal.require_customer(customer)
        customer = principal.customer
    try:
        until = until or svc.clock()
        since = since or until - timedelta(hours=24)
        ordered = since <= until
    except OverflowError:  # a date at the end of the calendar with a far offset
        raise BillingError("since and until must be representable UTC instants", code=ErrorCode.VALIDATION) from None
    if not ordered:
        raise BillingError("since must not be after until", code=ErrorCode.VALIDATION)
    return _json(svc.quota.late_commits(since, until, customer=customer, limit=limit))
