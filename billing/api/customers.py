"""``GET /v1/customers``: every customer, a page at a time (``billing.api.pagination``).
Creating one and reading one: ``billing.api.routes``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from billing.api.pagination import LIST_ERRORS, PageParams, customer_filter, error_responses, list_object, page_params
from billing.api.resources import CustomerList, customer_json
from billing.api.routes import Read
from billing.store.pages import customers_page

router = APIRouter(prefix="/v1", tags=["customers"])


@router.get("/customers", response_model=CustomerList, responses=error_responses(*LIST_ERRORS),
            summary="Customers, oldest first (a key restricted to a customer sees that one)")
def list_customers(request: Request, principal: Read,
                   page: Annotated[PageParams, Depends(page_params("customers", str))]) -> dict[str, Any]:
    with request.app.state.services.engine.connect() as conn:
        rows = customers_page(conn, limit=page.limit, after=page.after, before=page.before,
                              customer=customer_filter(principal, None))
    return list_object(request, "customers", rows, [customer_json(r) for r in rows.rows])
