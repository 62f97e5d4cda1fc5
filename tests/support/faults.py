"""httpx transports that lose answers, refuse connections and answer 5xx on purpose, in
front of a real app (holds no tests itself)."""

from __future__ import annotations

import httpx

BUSY = {"error": {"type": "api_error", "code": "service_unavailable", "message": "busy", "param": None,
                  "request_id": "req_fault"}}
IN_USE = {"error": {"type": "idempotency_error", "code": "idempotency_key_in_use",
                    "message": "a request with this key is in flight", "param": "Idempotency-Key",
                    "request_id": "req_fault"}}


class _Faults:
    """The faults still to play per path, the log of requests, and the answers a fault gives
    in place of the app's (shared by the sync and async transports)."""

    def __init__(self, faults: dict[str, list[str]] | None) -> None:
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.log: list[tuple[str, str, str | None, str | None]] = []

    def before(self, request: httpx.Request) -> tuple[str | None, httpx.Response | None]:
        """(the request's fault, the answer given without reaching the app, or None)."""
        queue = self.faults.get(request.url.path)
        fault = queue.pop(0) if queue else None
        self.log.append((request.method, request.url.path, request.headers.get("idempotency-key"), fault))
        if fault == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        if fault == "503":
            return fault, httpx.Response(503, json=BUSY)
        if fault == "in_use":
            return fault, httpx.Response(409, json=IN_USE)
        return fault, None

    @staticmethod
    def after(fault: str | None, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        """The answer the client sees once the app processed the request."""
        if fault == "lost":
            raise httpx.ReadTimeout("the answer was lost", request=request)
        if fault == "502":
            return httpx.Response(502, text="bad gateway")
        return response

    def keys(self, path: str) -> list[str | None]:
        return [key for _m, p, key, _f in self.log if p == path]


class FaultTransport(_Faults, httpx.BaseTransport):
    """Forwards to ``inner`` except as ``faults`` says: per path, the faults of its successive
    requests: ``connect`` (refused, never sent), ``503`` / ``in_use`` (answered without
    reaching the app), ``lost`` (the app processed it, the answer is lost: a read timeout),
    ``502`` (processed, then a proxy error). ``log``: (method, path, Idempotency-Key, fault)."""

    def __init__(self, inner: httpx.BaseTransport, faults: dict[str, list[str]] | None = None):
        super().__init__(faults)
        self.inner = inner
        self.bodies: list[tuple[str, bytes]] = []  # (path, request body)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append((request.url.path, request.read()))
        fault, answer = self.before(request)
        if answer is not None:
            return answer
        response = self.inner.handle_request(request)
        response.read()
        return self.after(fault, request, _as_httpx(response, request))


class AsyncFaultTransport(_Faults, httpx.AsyncBaseTransport):
    """``FaultTransport`` for ``httpx.AsyncClient``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, faults: dict[str, list[str]] | None = None):
        super().__init__(faults)
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        fault, answer = self.before(request)
        if answer is not None:
            return answer
        response = await self.inner.handle_async_request(request)
        await response.aread()
        return self.after(fault, request, _as_httpx(response, request))


def _as_httpx(response, request: httpx.Request) -> httpx.Response:
    """The inner transport's response as an ``httpx`` one: Starlette's TestClient speaks
    ``httpx2`` when that fork is installed (a dependency of some test extras pulls it in),
    while the clients under test are ``httpx`` clients."""
    if isinstance(response, httpx.Response):
        return response
    return httpx.Response(response.status_code, headers=list(response.headers.multi_items()),
                          content=response.content, request=request)
