"""``GET /v1/events``: the ledger's usage events, a page at a time, by customer, type, time
range (``start`` <= timestamp < ``end``) and status (``unpriced``: kept though the cost
book could not price it; ``unmetered``: no plan meters its type), in time order (then
arrival). The totals of the kept events: ``GET /v1/events/unpriced`` (``billing.api.events_read``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime

from billing.api.pagination import (
    LIST_ERRORS, PageParams, customer_filter, error_responses, list_object, page_params, param_error)
from billing.api.resources import EventList, event_json
from billing.api.routes import Read
from billing.events import instant_problem
from billing.ledger.accounts import MAX_ID_LENGTH
from billing.store.pages import events_page

router = APIRouter(prefix="/v1", tags=["events"])


@router.get("/events", response_model=EventList, responses=error_responses(*LIST_ERRORS),
            summary="Usage events in time order, by customer, type, time range and status")
def list_events(request: Request, principal: Read, page: Annotated[PageParams, Depends(page_params("events"))],
                customer: Annotated[str | None, Query(max_length=MAX_ID_LENGTH)] = None,
                type: Annotated[str | None, Query(max_length=100, examples=["llm.call"])] = None,
                status: Annotated[Literal["unpriced", "unmetered"] | None, Query(
                    description="unpriced: no price for its model yet; unmetered: no plan meters its type")] = None,
                start: Annotated[AwareDatetime | None, Query(description="timestamp >= start",
                                                             examples=["2026-10-01T00:00:00Z"])] = None,
                end: Annotated[AwareDatetime | None, Query(description="timestamp < end")] = None) -> dict[str, Any]:
    for name, value in (("start", start), ("end", end)):
        problem = value is not None and instant_problem(value)
        if problem:
            raise param_error(name, problem)
    with request.app.state.services.engine.connect() as conn:
        rows = events_page(conn, limit=page.limit, after=page.after, before=page.before,
                           customer=customer_filter(principal, customer), type=type, status=status,
                           start=start, end=end)
    return list_object(request, "events", rows, [event_json(r) for r in rows.rows])
