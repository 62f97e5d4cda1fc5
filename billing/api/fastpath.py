"""A pure-ASGI fast path in front of FastAPI for the hottest requests.

``POST /v1/quota/check`` runs before every model call an app makes, and ``GET /healthz``
is its floor in ``bench/check.py``. Both are ordinary FastAPI routes (documented in the
OpenAPI schema, reachable through the router); this middleware serves exactly those
method + path pairs with the very same handler functions, but without FastAPI's routing,
dependency and middleware layers, which cost more than the quota decision itself. Errors
become the same JSON bodies as everywhere else (``billing.api.errors``); a body larger
than ``max_body`` bytes is refused with 413.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from billing.api.errors import billing_error_response, error_body, validation_error_response
from billing.errors import BillingError

Handler = Callable[[Request], Awaitable[Response]]


class FastPath:
    def __init__(self, app: Any, routes: dict[tuple[str, str], Handler], max_body: int = 64 * 1024):
        self.app = app
        self.routes = routes
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        handler = self.routes.get((scope.get("method"), scope.get("path"))) if scope["type"] == "http" else None
        if handler is None:
            await self.app(scope, receive, send)
            return
        body = await self._body(receive)
        if body is None:  # the client went away
            return
        if body is _TOO_LARGE:
            response: Response = JSONResponse(error_body("http_413", f"request body over {self.max_body} bytes"),
                                              status_code=413)
        else:
            async def replay() -> dict:
                return {"type": "http.request", "body": body, "more_body": False}

            try:
                response = await handler(Request(scope, replay))
            except BillingError as exc:
                response = billing_error_response(exc)
            except RequestValidationError as exc:
                response = validation_error_response(exc)
        await response(scope, receive, send)

    async def _body(self, receive: Callable) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self.max_body:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks) if size <= self.max_body else _TOO_LARGE


_TOO_LARGE = b"<too large>"  # a marker, compared by identity
