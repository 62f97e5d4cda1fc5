"""A pure-ASGI fast path in front of FastAPI for the hottest requests.

``POST /v1/quota/check`` runs before every model call an app makes, and ``GET /healthz``
is its floor in ``bench/check.py``. Both are ordinary FastAPI routes (documented in the
OpenAPI schema, reachable through the router); ``BillingAPI`` serves exactly those method +
path pairs ahead of FastAPI's own stack (its native telemetry probe, error and body-limit
middleware, routing and dependency layers, Starlette's Request and Response objects), which
cost more than the quota decision itself. A fast handler gets the raw scope and the body
and returns (status, JSON bytes, extra headers), sharing its logic with the route. Errors
become the same JSON bodies as everywhere else (``billing.api.errors``); a body larger than
``max_body`` bytes is refused with 413 (``request_too_large``), as soon as its Content-Length
says so. Every other request passes ``billing.api.limits.guard`` first: the request-size
limit of all routes and the last-resort 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from billing.api import limits
from billing.api.errors import ErrorResponse, billing_error_response, error_body, validation_error_response
from billing.errors import BillingError, ErrorCode

# (app, ASGI scope, request body) -> (status, JSON body, extra headers)
Handler = Callable[[FastAPI, dict, bytes], Awaitable[tuple[int, bytes, list[tuple[bytes, bytes]]]]]
_JSON = (b"content-type", b"application/json")
log = logging.getLogger("billing.api")


class BillingAPI(FastAPI):
    """FastAPI, with ``fast_routes`` ((method, path) -> handler) served ahead of its stack."""

    fast_routes: dict[tuple[str, str], Handler] = {}
    max_body: int = 64 * 1024
    max_request_bytes: int = limits.DEFAULT_MAX_REQUEST_BYTES  # every route (billing.api.limits)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        handler = self.fast_routes.get((scope["method"], scope["path"]))
        if handler is None:  # FastAPI's stack, behind the size limit and the last resort
            await limits.guard(super().__call__, scope, receive, send, self.max_request_bytes)
            return
        # a fast route answers every error itself; it reads at most max_body bytes
        if limits.declared_over(scope, self.max_body):
            await limits.refuse(send, self.max_body)
            return
        scope["app"] = self  # what Starlette sets: handlers reach app.state through the request
        body = await limits.read_body(receive, self.max_body)
        if body is None:  # the client went away
            return
        if body is limits.TOO_LARGE:
            await limits.refuse(send, self.max_body)
            return
        try:
            status, payload, headers = await handler(self, scope, body)
        except BillingError as exc:
            response: Response = billing_error_response(exc)
        except RequestValidationError as exc:
            response = validation_error_response(exc)
        except Exception:  # the same last resort as the app's own handler
            log.exception("unhandled error")
            response = ErrorResponse(error_body(str(ErrorCode.INTERNAL), "internal error"), status_code=500)
        else:
            await send({"type": "http.response.start", "status": status,
                        "headers": [_JSON, (b"content-length", str(len(payload)).encode()), *headers]})
            await send({"type": "http.response.body", "body": payload})
            return
        await response(scope, receive, send)
