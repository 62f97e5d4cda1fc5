"""A pure-ASGI fast path in front of FastAPI for the hottest requests.

``POST /v1/quota/check`` runs before every model call an app makes, ``/v1/quota/reserve``,
``/commit`` and ``/release`` around every guarded one (``billing.api.holds_fast``), and
``GET /healthz`` is the floor in ``bench/check.py``. Both are ordinary FastAPI routes (documented in the
OpenAPI schema, reachable through the router); ``BillingAPI`` serves exactly those method +
path pairs ahead of FastAPI's own stack (its native telemetry probe, error and body-limit
middleware, routing and dependency layers, Starlette's Request and Response objects), which
cost more than the quota decision itself. A fast handler gets the raw scope and the body
and returns (status, JSON bytes, extra headers), sharing its logic with the route. Errors
become the same JSON bodies as everywhere else (``billing.api.errors``); a body larger than
``max_body`` bytes is refused with 413 (``request_too_large``), as soon as its Content-Length
says so. Every other request passes ``billing.api.limits.guard`` first: the request-size
limit of all routes and the last-resort 500.

``add_layer`` puts an ASGI layer in front of everything the app serves, the fast path
included, inside the size limit (the ``Idempotency-Key`` records, the JSON media type rule).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from billing.api import limits
from billing.api.errors import (
    billing_error_response, data_error_response, error_response, is_data_error, unavailable_response,
    validation_error_response)
from billing.errors import BillingError, ErrorCode

# (app, ASGI scope, request body) -> (status, JSON body, extra headers)
Handler = Callable[[FastAPI, dict, bytes], Awaitable[tuple[int, bytes, list[tuple[bytes, bytes]]]]]
# the same, blocking, for a worker thread (``fast_sync``: the Idempotency-Key layer runs its
# claim, the handler and its record in one thread hop)
SyncHandler = Callable[[FastAPI, dict, bytes], tuple[int, bytes, list[tuple[bytes, bytes]]]]
_JSON = (b"content-type", b"application/json")
log = logging.getLogger("billing.api")


class BillingAPI(FastAPI):
    """FastAPI, with ``fast_routes`` ((method, path) -> handler) served ahead of its stack."""

    fast_routes: dict[tuple[str, str], Handler] = {}
    fast_sync: dict[tuple[str, str], SyncHandler] = {}  # the blocking form of some fast routes
    max_body: int = 64 * 1024
    max_request_bytes: int = limits.DEFAULT_MAX_REQUEST_BYTES  # every route (billing.api.limits)
    _entry: Callable | None = None  # the layers around _dispatch (add_layer)
    _outer: Callable | None = None  # around everything, the size limit too (``billing.api.telemetry``)

    def add_layer(self, layer: Callable[[Callable], Callable]) -> None:
        """Wrap everything this app serves (the fast path too) in ``layer(inner ASGI app)``;
        the layer added last is the outermost, inside the size limit."""
        self._entry = layer(self._entry or self._dispatch)

    def wrap_all(self, outer: Callable[[Callable], Callable]) -> None:
        """Put ``outer(inner ASGI app)`` around every HTTP request, refused ones included
        (request ids, metrics)."""
        self._outer = outer(self._serve)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await (self._outer or self._serve)(scope, receive, send)

    async def _serve(self, scope: dict, receive: Callable, send: Callable) -> None:
        inner = self._entry or self._dispatch
        if (scope["method"], scope["path"]) not in self.fast_routes:
            # FastAPI's stack, behind the size limit and the last resort
            await limits.guard(inner, scope, receive, send, self.max_request_bytes)
            return
        # a fast route answers every error itself; it reads at most max_body bytes
        scope["fast_route"] = True
        if limits.declared_over(scope, self.max_body):
            await limits.refuse(send, self.max_body, scope)
            return
        await inner(scope, receive, send)

    async def _dispatch(self, scope: dict, receive: Callable, send: Callable) -> None:
        handler = self.fast_routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        if handler is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # what Starlette sets: handlers reach app.state through the request
        body = await limits.read_body(receive, self.max_body)
        if body is None:  # the client went away
            return
        if body is limits.TOO_LARGE:
            await limits.refuse(send, self.max_body, scope)
            return
        try:
            if scope.get("query_string"):  # the fast routes take no query parameters
                raise unknown_query_parameter(scope["query_string"])
            status, payload, headers = await handler(self, scope, body)
        except Exception as exc:  # noqa: BLE001 - answered as the app's own handlers answer it
            response = error_of(exc, scope)
        else:
            await send({"type": "http.response.start", "status": status,
                        "headers": [_JSON, (b"content-length", str(len(payload)).encode()), *headers]})
            await send({"type": "http.response.body", "body": payload})
            return
        await response(scope, receive, send)


def error_of(exc: Exception, scope: dict) -> Response:
    """The answer to an error a fast handler raised: the same as the app's own handlers give."""
    if isinstance(exc, BillingError):
        return billing_error_response(exc, scope)
    if isinstance(exc, RequestValidationError):
        return validation_error_response(exc, scope)
    if _unavailable(exc):
        return unavailable_response(exc, scope)
    if is_data_error(exc):
        return data_error_response(exc, scope)
    log.exception("unhandled error")
    return error_response(str(ErrorCode.INTERNAL), "internal error", scope=scope)


def answer_sync(handler: SyncHandler, app: FastAPI, scope: dict, body: bytes) -> tuple[int, bytes, list]:
    """Run a blocking fast handler (``fast_sync``) to its answer, errors included: (status,
    body, headers without content-length)."""
    try:
        if scope.get("query_string"):
            raise unknown_query_parameter(scope["query_string"])
        status, payload, headers = handler(app, scope, body)
    except Exception as exc:  # noqa: BLE001
        response = error_of(exc, scope)
        return response.status_code, bytes(response.body), [
            (n, v) for n, v in response.raw_headers if n.lower() != b"content-length"]
    return status, payload, [_JSON, *headers]


def unknown_query_parameter(query_string: bytes) -> BillingError:
    """400 ``parameter_unknown`` naming the first query parameter of a route that takes none."""
    from urllib.parse import parse_qsl

    names = [name for name, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)]
    name = names[0] if names else query_string.decode("latin-1")[:100]
    return BillingError(f"unknown query parameter {name!r}: this route takes none", code=ErrorCode.PARAMETER_UNKNOWN,
                        param=name)


def _unavailable(exc: Exception) -> bool:
    """A database error the app maps to 503 (``billing.api.errors.unavailable_response``)."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    if isinstance(exc, (OperationalError, sqlite3.OperationalError)):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, psycopg.OperationalError)
