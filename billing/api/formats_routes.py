"""The HTTP doors of the standard formats (``billing.api.formats``): CloudEvents on
``POST /v1/events`` (``cloudevents_answer``, called by that route) and OTLP/HTTP JSON traces
on ``POST /v1/otlp/v1/traces``. Both only map; ``Ledger.record`` decides every event."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response

from billing.api.auth import Principal
from billing.api.responses import OtlpOut, documented
from billing.api.routes import Ingest, _json
from billing.api.formats import Refused, cloudevents, otlp
from billing.api.formats.recording import record_mapped
from billing.config import get_settings
from billing.errors import BillingError, ErrorCode

MAX_ITEMS = 10_000  # as a JSON batch of POST /v1/events

_CE_SCHEMA = {"type": "object", "required": ["specversion", "id", "source", "type", "time", "subject"],
              "properties": {"specversion": {"const": "1.0"}, "id": {"type": "string"}, "source": {"type": "string"},
                             "type": {"type": "string"}, "time": {"type": "string", "format": "date-time"},
                             "subject": {"type": "string"}, "data": {"type": "object"}}}
CLOUDEVENTS_CONTENT = {cloudevents.STRUCTURED: {"schema": _CE_SCHEMA},
                       cloudevents.BATCH: {"schema": {"type": "array", "items": _CE_SCHEMA, "maxItems": MAX_ITEMS}}}


def _check_items(items: list, principal: Principal) -> None:
    if len(items) > MAX_ITEMS:
        raise BillingError(f"at most {MAX_ITEMS:,} events per batch", code=ErrorCode.VALIDATION)
    for item in items:
        if not isinstance(item, Refused):
            principal.require_customer(item["customer"])


def cloudevents_answer(body: Any, media: str, request: Request, principal: Principal) -> dict[str, Any]:
    """``POST /v1/events`` with a CloudEvents Content-Type. A structured-mode event the
    mapping refuses is the request's 4xx (``param`` and ``details.field`` name the attribute); in a batch
    it is that position's rejection, its neighbours kept."""
    settings = get_settings()
    try:
        items = cloudevents.to_events(body, media, customer_attribute=settings.cloudevents_customer_attribute,
                                      own_source=settings.cloudevents_source)
    except ValueError as exc:
        raise BillingError(str(exc), code=ErrorCode.VALIDATION, details={"field": "(body)"}) from None
    if media == cloudevents.STRUCTURED and isinstance(items[0], Refused):
        refused = items[0]
        raise BillingError(refused.message, code=refused.code, details={"field": refused.field}, param=refused.field)
    _check_items(items, principal)
    return record_mapped(request.app.state.services.ledger, items)


router = APIRouter(prefix="/v1")
_ATTR = [("customer.id", "acme"), ("gen_ai.request.model", "claude-sonnet-4-5"), ("gen_ai.operation.name", "chat")]
OTLP_EXAMPLE = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [{
    "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "chat claude-sonnet-4-5",
    "startTimeUnixNano": "1760529600000000000", "endTimeUnixNano": "1760529601000000000",
    "attributes": [*({"key": k, "value": {"stringValue": v}} for k, v in _ATTR),
                   {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "1500"}},
                   {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "220"}}]}]}]}]}


def otlp_names() -> otlp.OtlpAttributes:
    s = get_settings()
    return otlp.OtlpAttributes(customer=s.otlp_customer_attribute, feature=s.otlp_feature_attribute,
                               task=s.otlp_task_attribute)


def otlp_answer(body: Any, request: Request, principal: Principal) -> dict[str, Any]:
    """An ``ExportTraceServiceResponse`` (``partialSuccess`` when spans were rejected or none
    carried GenAI attributes) with our report under ``billing``."""
    try:
        mapped = otlp.to_events(body, otlp_names())
    except ValueError as exc:
        raise BillingError(f"not an OTLP JSON ExportTraceServiceRequest: {exc}", code=ErrorCode.VALIDATION,
                           details={"field": str(exc).split(" ", 1)[0]}, param=str(exc).split(" ", 1)[0]) from None
    _check_items(mapped.items, principal)
    report = record_mapped(request.app.state.services.ledger, mapped.items)
    for result, span in zip(report["results"], mapped.spans):
        result["span"] = span
    report["skipped"] = mapped.skipped
    out: dict[str, Any] = {}
    rejected = report["rejected"] + report["conflicts"]
    if rejected:
        first = next(r for r in report["results"] if r["status"] in ("rejected", "conflict"))
        out["partialSuccess"] = {"rejectedSpans": str(rejected),
                                 "errorMessage": f"{rejected} GenAI span(s) not recorded; first: "
                                                 f"{first['code']}: {first['message']}"}
    elif not mapped.items:
        out["partialSuccess"] = {"rejectedSpans": "0",
                                 "errorMessage": f"no span carried GenAI attributes ({mapped.skipped} span(s) "
                                                 f"skipped): nothing recorded"}
    out["billing"] = report
    return out


@router.post("/otlp/v1/traces", tags=["events"],
             summary="OTLP/HTTP JSON traces: each span with GenAI attributes is a usage event",
             **documented(OtlpOut, ErrorCode.CUSTOMER_NOT_FOUND),
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"type": "object", "properties": {"resourceSpans": {"type": "array"}}},
                 "example": OTLP_EXAMPLE}}}})
def otlp_traces(body: Annotated[Any, Body()], request: Request, principal: Ingest) -> Response:
    return _json(otlp_answer(body, request, principal))
