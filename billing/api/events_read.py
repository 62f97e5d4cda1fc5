"""``GET /v1/events/unpriced``: the events kept though they could not be priced (no price for
their model yet) or metered (no plan meters their type), with the reason and totals."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from billing.api.responses import UnpricedOut, documented
from billing.api.routes import Read, _json
from billing.store.flagged import listing

router = APIRouter(prefix="/v1")


@router.get("/events/unpriced", tags=["events"],
            summary="Events stored unpriced or unmetered, with the reason (oldest first) and totals",
            **documented(UnpricedOut))
def unpriced_events(request: Request, principal: Read,
                    customer: Annotated[str | None, Query(max_length=200)] = None,
                    status: Literal["unpriced", "unmetered"] | None = None,
                    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="next_after of the previous page")] = 0,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    if principal.customer is not None:  # a key restricted to one customer sees that customer only
        if customer is not None:
            principal.require_customer(customer)
        customer = principal.customer
    return _json(listing(request.app.state.services.engine, customer=customer, status=status, after=after,
                         limit=limit))
