"""Domain error codes -> HTTP statuses, and the JSON error body ``{"code", "message"}``.

Every error response has a stable ``code`` (the ``ErrorCode`` values, plus
``http_<status>`` for routing errors such as 405). Malformed input is always a 4xx: request
validation errors (bad JSON, wrong types, missing fields) are 422 ``validation_error`` with
the problems in ``details``; a body over the size limit is 413 ``request_too_large``
(``billing.api.limits``). Bodies are rendered so that text the client sent, echoed back, can
never fail the answer (``json_bytes``).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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
    ErrorCode.VALIDATION: 422,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.EXTERNAL: 502,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.EVENT_TOO_LARGE: 422,
    ErrorCode.REQUEST_TOO_LARGE: 413,
    ErrorCode.INTERNAL: 500,
    ErrorCode.INVALID_SIGNATURE: 400,
    ErrorCode.INVALID_PAYLOAD: 400,
    ErrorCode.WEBHOOK_NOT_CONFIGURED: 503,
    ErrorCode.EVENT_LOG_NOT_CONFIGURED: 503,
}


def status_for(code: str) -> int:
    try:
        return STATUS.get(ErrorCode(code), 400)
    except ValueError:
        return 400


def error_body(code: str, message: str, details=None) -> dict:
    body = {"code": str(code), "message": message}
    if details is not None:
        body["details"] = details
    return body


def json_bytes(content: Any) -> bytes:
    """Compact JSON as UTF-8; text that UTF-8 cannot carry (a lone surrogate the client sent,
    echoed in a message) is written as a ``\\uXXXX`` escape instead of failing the answer."""
    try:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_json(code: str, message: str, details=None) -> bytes:
    return json_bytes(error_body(code, message, details))


class ErrorResponse(JSONResponse):
    """A JSON response that never fails to render the client's own text back."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def billing_error_response(exc: BillingError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.code == ErrorCode.UNAUTHENTICATED else None
    return ErrorResponse(error_body(str(exc.code), exc.message, exc.details), status_code=status_for(exc.code),
                        headers=headers)


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append({"path": loc, "message": err.get("msg", ""), "type": err.get("type", "")})
    first = problems[0] if problems else {"path": "", "message": "invalid request"}
    message = f"{first['path']}: {first['message']}" if first["path"] else first["message"]
    return ErrorResponse(error_body(str(ErrorCode.VALIDATION), message, problems), status_code=422)


def unavailable_response(exc: BaseException) -> JSONResponse:
    """A database that is busy past the retries (deadlocks, serialization failures, a locked
    SQLite file) or unreachable: 503 ``service_unavailable`` with ``Retry-After``, never a
    500. Every write is one transaction, so nothing of the request was written."""
    log.warning("database unavailable: %s", (str(exc).splitlines() or [""])[0])
    return ErrorResponse(error_body(str(ErrorCode.UNAVAILABLE), "the database is busy or unreachable; "
                                   "nothing was written, retry the request"), status_code=503,
                        headers={"Retry-After": "1"})


def install(app: FastAPI) -> None:
    @app.exception_handler(BillingError)
    async def _billing_error(_request: Request, exc: BillingError) -> JSONResponse:
        return billing_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: str(ErrorCode.NOT_FOUND), 401: str(ErrorCode.UNAUTHENTICATED),
                403: str(ErrorCode.FORBIDDEN)}.get(exc.status_code, f"http_{exc.status_code}")
        return ErrorResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def _data(_request: Request, exc: Exception) -> JSONResponse:
        # the database refused a value of the request (a NUL character in an id, a number
        # out of range...): the client's input, not a server fault
        reason = (str(getattr(exc, "orig", None) or exc).splitlines() or [""])[0]  # not the SQL or its parameters
        return ErrorResponse(error_body(str(ErrorCode.VALIDATION), f"a value cannot be stored: {reason}"),
                            status_code=status_for(str(ErrorCode.VALIDATION)))

    async def _unavailable(_request: Request, exc: Exception) -> JSONResponse:
        return unavailable_response(exc)

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
    async def _internal(_request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - last resort
        log.exception("unhandled error")
        return ErrorResponse(error_body(str(ErrorCode.INTERNAL), "internal error"), status_code=500)
