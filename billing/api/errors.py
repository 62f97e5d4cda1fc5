"""Domain error codes -> HTTP statuses and Stripe error types, and the error body every
error response has (Stripe's shape)::

    {"error": {"type": "invalid_request_error", "code": "customer_not_found", "message": "...",
               "param": null, "request_id": "req_...", "details": ...}}

``code`` is stable (the ``ErrorCode`` values, listed in README "Error codes", plus
``http_<status>`` for routing errors such as 405); ``type`` is Stripe's (``type_for``);
``param`` names the request parameter at fault when there is one; ``request_id`` is the
response's ``X-Request-Id``; ``details`` (optional) says more. Routes declare their error
answers with ``error_responses(*codes)``. Malformed input is always a 4xx: request
validation errors (bad JSON, wrong types, missing fields) are 422 ``validation_error`` with
``param`` the first field at fault and every problem in ``details``; an unknown query
parameter is 400 ``parameter_unknown``; a body over the size limit is 413 ``request_too_large``
(``billing.api.limits``). Bodies are rendered so that text the client sent, echoed back, can
never fail the answer (``json_bytes``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any, Literal, get_args

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError as DBAPIDataError
from sqlalchemy.exc import OperationalError as DBAPIOperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from billing.errors import BillingError, ErrorCode

log = logging.getLogger("billing.api")

STATUS: dict[ErrorCode, int] = {
    ErrorCode.PLAN_INVALID: 422,
    ErrorCode.PLAN_NOT_FOUND: 404,
    ErrorCode.EVENT_INVALID: 422,
    ErrorCode.UNKNOWN_EVENT_TYPE: 422,
    ErrorCode.UNKNOWN_MODEL: 422,
    ErrorCode.NEGATIVE_QUANTITY: 422,
    ErrorCode.QUANTITY_TOO_LARGE: 422,
    ErrorCode.NON_NUMERIC_QUANTITY: 422,
    ErrorCode.BAD_TIMESTAMP: 422,
    ErrorCode.TIMESTAMP_IN_FUTURE: 422,
    ErrorCode.EVENT_CONFLICT: 409,
    ErrorCode.EVENT_ARCHIVED: 409,
    ErrorCode.CUSTOMER_EXISTS: 409,
    ErrorCode.CUSTOMER_NOT_FOUND: 404,
    ErrorCode.SUBSCRIPTION_NOT_FOUND: 404,
    ErrorCode.SUBSCRIPTION_EXISTS: 409,
    ErrorCode.INVOICE_NOT_FOUND: 404,
    ErrorCode.INVALID_TRANSITION: 409,
    ErrorCode.PERIOD_INVOICED: 409,
    ErrorCode.CURRENCY_MISMATCH: 422,
    ErrorCode.CONTRACT_INVALID: 422,
    ErrorCode.COUPON_NOT_FOUND: 404,
    ErrorCode.BUDGET_NOT_FOUND: 404,
    ErrorCode.RESERVATION_NOT_FOUND: 404,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.IDEMPOTENCY_KEY_INVALID: 400,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 409,
    ErrorCode.IDEMPOTENCY_KEY_IN_USE: 409,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.WEBHOOK_TARGET_FORBIDDEN: 422,
    ErrorCode.VALIDATION: 422,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.EXTERNAL: 502,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.EVENT_TOO_LARGE: 422,
    ErrorCode.REQUEST_TOO_LARGE: 413,
    ErrorCode.PARAMETER_UNKNOWN: 400,
    ErrorCode.PARAMETER_INVALID: 400,
    ErrorCode.INTERNAL: 500,
    ErrorCode.INVALID_SIGNATURE: 400,
    ErrorCode.INVALID_PAYLOAD: 400,
    ErrorCode.WEBHOOK_NOT_CONFIGURED: 503,
    ErrorCode.EVENT_LOG_NOT_CONFIGURED: 503,
}


# Stripe's error types (``ErrorDetail.type``): every code belongs to exactly one (``type_for``)
_TYPE_OF: dict[ErrorCode, str] = {
    ErrorCode.UNAUTHENTICATED: "authentication_error",
    ErrorCode.FORBIDDEN: "permission_error",
    ErrorCode.IDEMPOTENCY_KEY_INVALID: "idempotency_error",
    ErrorCode.IDEMPOTENCY_KEY_REUSED: "idempotency_error",
    ErrorCode.IDEMPOTENCY_KEY_IN_USE: "idempotency_error",
}


def type_for(code: str) -> str:
    """The Stripe error ``type`` of ``code``: a 5xx is an ``api_error``, an auth or
    Idempotency-Key problem its own type, anything else the caller's ``invalid_request_error``."""
    try:
        known = ErrorCode(code)
    except ValueError:
        return "api_error" if status_for(code) >= 500 else "invalid_request_error"
    if known in _TYPE_OF:
        return _TYPE_OF[known]
    return "api_error" if STATUS.get(known, 400) >= 500 else "invalid_request_error"


class ErrorDetail(BaseModel):
    """One error: a stable ``code`` (README, "Errors"), its Stripe ``type``, a message
    for people, the request parameter at fault (``param``, when one is) and the request id."""

    type: Literal["invalid_request_error", "authentication_error", "permission_error", "idempotency_error",
                  "rate_limit_error", "api_error"] = Field(description="Stripe's error type")
    code: str = Field(description="stable machine-readable code", examples=["customer_not_found"])
    message: str = Field(description="for people; may change", examples=["no customer 'acme'"])
    param: str | None = Field(None, description="the request parameter at fault, dotted for nested fields",
                              examples=["customer_id"])
    request_id: str | None = Field(None, description="the request's X-Request-Id", examples=["req_0f3a9c"])
    details: Any = Field(None, description="more about the error (validation problems, ...)")


TYPES: tuple[str, ...] = get_args(ErrorDetail.model_fields["type"].annotation)


class ErrorBody(BaseModel):
    """Every error response's body: ``{"error": {...}}``."""

    error: ErrorDetail


def error_responses(*codes: ErrorCode | str) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=``: each HTTP status the ``codes`` map to, with the error body's
    schema and the codes it may carry (``422 validation_error`` is always declared). Name the
    codes the route itself raises; the ones every route may answer (401/403 on authenticated
    routes, 400 ``parameter_unknown``, 413, 415, Idempotency-Key errors on POST, 500, 503) are
    added to the OpenAPI document for every route by ``billing.api.openapi``."""
    by_status: dict[int, list[str]] = {}
    for code in (*codes, ErrorCode.VALIDATION):
        by_status.setdefault(status_for(str(code)), [])
        if str(code) not in by_status[status_for(str(code))]:
            by_status[status_for(str(code))].append(str(code))
    out: dict[int | str, dict[str, Any]] = {}
    for status, names in sorted(by_status.items()):
        example = {"error": {"type": type_for(names[0]), "code": names[0], "message": "...", "param": None,
                             "request_id": "req_0f3a9c5d2b7e4a18c6d0e1f2"}}
        out[status] = {"model": ErrorBody, "description": "codes: " + ", ".join(f"`{n}`" for n in names),
                       "content": {"application/json": {"example": example}}}
    return out


def status_for(code: str) -> int:
    try:
        return STATUS.get(ErrorCode(code), 400)
    except ValueError:
        return 400


def error_body(code: str, message: str, details: Any = None, *, param: str | None = None,
               request_id: str | None = None) -> dict:
    """``{"error": {"type", "code", "message", "param", "request_id"[, "details"]}}``."""
    error = {"type": type_for(str(code)), "code": str(code), "message": message, "param": param,
             "request_id": request_id}
    if details is not None:
        error["details"] = details
    return {"error": error}


def request_id_of(scope: dict | None) -> str | None:
    """The request id ``billing.api.telemetry`` gave the request (None outside it)."""
    if scope is None:
        return None
    state = scope.get("state")
    return state.get("request_id") if isinstance(state, dict) else getattr(state, "request_id", None)


def json_bytes(content: Any) -> bytes:
    """Compact JSON as UTF-8; text that UTF-8 cannot carry (a lone surrogate the client sent,
    echoed in a message) is written as a ``\\uXXXX`` escape instead of failing the answer."""
    try:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_json(code: str, message: str, details: Any = None, *, param: str | None = None,
               scope: dict | None = None) -> bytes:
    return json_bytes(error_body(code, message, details, param=param, request_id=request_id_of(scope)))


class ErrorResponse(JSONResponse):
    """A JSON response that never fails to render the client's own text back."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def error_response(code: str, message: str, details: Any = None, *, param: str | None = None,
                   scope: dict | None = None, status: int | None = None, headers=None) -> JSONResponse:
    """The error answer of ``code`` (its status unless ``status`` is given)."""
    return ErrorResponse(error_body(code, message, details, param=param, request_id=request_id_of(scope)),
                         status_code=status or status_for(code), headers=headers)


def billing_error_response(exc: BillingError, scope: dict | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.code == ErrorCode.UNAUTHENTICATED else None
    return error_response(str(exc.code), exc.message, exc.details, param=exc.param or _param_of(exc.details),
                          scope=scope, headers=headers)


def _param_of(details: Any) -> str | None:
    """The field a service named in ``details`` when it did not set ``param``: ``{"param": ...}``
    or ``{"problems": ["field: why", ...]}`` (the first)."""
    if not isinstance(details, dict):
        return None
    if isinstance(details.get("param"), str):
        return details["param"]
    problems = details.get("problems")
    if isinstance(problems, list) and problems and isinstance(problems[0], str) and ": " in problems[0]:
        field = problems[0].split(": ", 1)[0]
        return field if field.replace(".", "").replace("_", "").isalnum() else None
    return None


# where FastAPI says a value came from: not part of the parameter's name
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


def _param(loc: Any) -> str:
    return ".".join(str(p) for i, p in enumerate(loc or ()) if not (i == 0 and p in _LOCATIONS))


def validation_error_response(exc: RequestValidationError, scope: dict | None = None) -> JSONResponse:
    """422 ``validation_error``: ``param`` names the first field at fault (dotted, list
    positions included: ``events.3.customer``), ``details`` lists every problem."""
    problems = []
    for err in exc.errors():
        problems.append({"path": _param(err.get("loc", ())), "message": err.get("msg", ""),
                         "type": err.get("type", "")})
    first = problems[0] if problems else {"path": "", "message": "invalid request"}
    message = f"{first['path']}: {first['message']}" if first["path"] else first["message"]
    return error_response(str(ErrorCode.VALIDATION), message, problems, param=first["path"] or None, scope=scope)


def data_error_response(exc: BaseException, scope: dict | None = None) -> JSONResponse:
    """The database refused a value of the request (a NUL character in an id, a number out
    of range...): the client's input, not a server fault (422 ``validation_error``)."""
    reason = (str(getattr(exc, "orig", None) or exc).splitlines() or [""])[0]  # not the SQL or its parameters
    return error_response(str(ErrorCode.VALIDATION), f"a value cannot be stored: {reason}", scope=scope)


def is_data_error(exc: BaseException) -> bool:
    """An error ``data_error_response`` answers (through SQLAlchemy or a raw driver)."""
    if isinstance(exc, DBAPIDataError):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, psycopg.DataError)


def unavailable_response(exc: BaseException, scope: dict | None = None) -> JSONResponse:
    """A database that is busy past the retries (deadlocks, serialization failures, a locked
    SQLite file) or unreachable: 503 ``service_unavailable`` with ``Retry-After``, never a
    500. Every write is one transaction, so nothing of the request was written."""
    log.warning("database unavailable: %s", (str(exc).splitlines() or [""])[0])
    return error_response(str(ErrorCode.UNAVAILABLE), "the database is busy or unreachable; nothing was written, "
                          "retry the request", scope=scope, headers={"Retry-After": "1"})


def install(app: FastAPI) -> None:
    @app.exception_handler(BillingError)
    async def _billing_error(request: Request, exc: BillingError) -> JSONResponse:
        return billing_error_response(exc, request.scope)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(exc, request.scope)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: str(ErrorCode.NOT_FOUND), 401: str(ErrorCode.UNAUTHENTICATED), 403: str(ErrorCode.FORBIDDEN),
                422: str(ErrorCode.VALIDATION)}.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(code, str(exc.detail), scope=request.scope, status=exc.status_code,
                              headers=getattr(exc, "headers", None))

    async def _data(request: Request, exc: Exception) -> JSONResponse:
        return data_error_response(exc, request.scope)

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        return unavailable_response(exc, request.scope)

    app.add_exception_handler(DBAPIDataError, _data)  # through SQLAlchemy
    app.add_exception_handler(DBAPIOperationalError, _unavailable)
    app.add_exception_handler(sqlite3.OperationalError, _unavailable)  # raw driver connections
    try:
        import psycopg
    except ImportError:  # pragma: no cover - PostgreSQL support not installed
        pass
    else:
        app.add_exception_handler(psycopg.DataError, _data)  # raw driver connections (quota)
        app.add_exception_handler(psycopg.OperationalError, _unavailable)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - last resort
        log.exception("unhandled error")
        return error_response(str(ErrorCode.INTERNAL), "internal error", scope=request.scope)
