"""Report pages over HTTP: ``router`` (FastAPI) serving ``GET /reports/margins``.

Mounted by ``billing.api.app.create_app``; the report is computed by ``billing.reports.margins``
and rendered by ``billing.reports.html``. Needs an API key with the ``read`` (or ``admin``)
scope that is not restricted to one customer: the page shows every customer's revenue and cost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from sqlalchemy import Engine

from billing.api.errors import error_responses
from billing.api.routes import scoped
from billing.catalog import Catalog
from billing.config import get_settings
from billing.errors import BillingError, ErrorCode
from billing.events import instant_problem
from billing.reports.html import margins_html
from billing.reports.margins import margin_report

router = APIRouter(tags=["reports"])


def get_engine(request: Request) -> Engine:
    """The app's engine; a bare app without services (tests) uses ``BILLING_DATABASE_URL``."""
    services = getattr(request.app.state, "services", None)
    if services is not None:
        return services.engine
    from billing.store.db import engine_for

    return engine_for(get_settings().database_url)


def get_catalog(request: Request) -> Catalog:
    services = getattr(request.app.state, "services", None)
    if services is not None:
        return services.catalog
    return Catalog.from_paths(get_settings().plans_dir)


async def authorize(request: Request) -> None:
    """A ``read``/``admin`` API key not restricted to one customer (the app's key store)."""
    if getattr(request.app.state, "keys", None) is None:
        raise HTTPException(status_code=401, detail="no API key store configured for report pages")
    principal = await scoped("read")(request)
    if principal.customer is not None:
        raise BillingError("report pages show every customer; this key is restricted to one",
                           code=ErrorCode.FORBIDDEN)


@router.get("/reports/margins", response_class=HTMLResponse,
            summary="Margin report: revenue, provider cost and gross margin per customer (HTML with charts)",
            responses={**error_responses(), 200: {"description": "The report: HTML (default), JSON or CSV (`format`)",
                                                  "content": {"text/html": {"schema": {"type": "string"}},
                                                              "application/json": {"schema": {"type": "object"}},
                                                              "text/csv": {"schema": {"type": "string"}}}}})
def margins_page(
    engine: Annotated[Engine, Depends(get_engine)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    _auth: Annotated[None, Depends(authorize)],
    period: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$", description="YYYY-MM; default: this month")] = None,
    by: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_\-]+$", description="event property to break down by")] = None,
    allocate: Literal["events", "cost"] = "events",
    whale_margin: Annotated[str | None, Query(description="also flag customers below this margin %")] = None,
    as_of: Annotated[datetime | None, Query(description="rate open periods up to this instant")] = None,
    format: Literal["html", "json", "csv"] = "html",
) -> Response:
    now = datetime.now(UTC)
    if as_of is not None and as_of.tzinfo is None:
        raise BillingError("as_of needs a timezone", param="as_of")
    if as_of is not None and instant_problem(as_of):  # year 1 / 9999 with an offset overflowed: a 500
        raise BillingError(f"as_of {instant_problem(as_of)}", param="as_of")
    threshold = None
    if whale_margin is not None:
        try:
            threshold = Decimal(whale_margin)
        except InvalidOperation:
            threshold = None
        if threshold is None or not threshold.is_finite():
            raise BillingError("whale_margin must be a number", param="whale_margin") from None
    label = period or f"{now.year:04d}-{now.month:02d}"
    try:
        report = margin_report(engine, catalog, label, as_of=as_of or now, by=by, allocate=allocate,
                               whale_margin_pct=threshold)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    if format == "json":
        return JSONResponse(report.to_json())
    if format == "csv":
        return PlainTextResponse(report.to_csv(), media_type="text/csv")
    return HTMLResponse(margins_html(report))
