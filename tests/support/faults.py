"""httpx transports that lose answers, refuse connections and answer 5xx on purpose, in
front of a real app (holds no tests itself)."""

from __future__ import annotations

import httpx

BUSY = {"code": "internal_error", "message": "busy"}
IN_USE = {"code": "idempotency_key_in_use", "message": "a request with this key is in flight"}


def _fault(faults: dict[str, list[str]], path: str) -> str | None:
    queue = faults.get(path)
    return queue.pop(0) if queue else None


class FaultTransport(httpx.BaseTransport):
    """Forwards to ``inner`` except as ``faults`` says: per path, the faults of its successive
    requests: ``connect`` (refused, never sent), ``503`` / ``in_use`` (answered without
    reaching the app), ``lost`` (the app processed it, the answer is lost: a read timeout),
    ``502`` (processed, then a proxy error). ``log``: (method, path, Idempotency-Key, fault)."""

    def __init__(self, inner: httpx.BaseTransport, faults: dict[str, list[str]] | None = None):
        self.inner = inner
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.log: list[tuple[str, str, str | None, str | None]] = []
        self.bodies: list[tuple[str, bytes]] = []  # (path, request body)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        fault = _fault(self.faults, request.url.path)
        self.log.append((request.method, request.url.path, request.headers.get("idempotency-key"), fault))
        self.bodies.append((request.url.path, request.read()))
        if fault == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        if fault == "503":
            return httpx.Response(503, json=BUSY)
        if fault == "in_use":
            return httpx.Response(409, json=IN_USE)
        response = self.inner.handle_request(request)
        response.read()
        if fault == "lost":
            raise httpx.ReadTimeout("the answer was lost", request=request)
        if fault == "502":
            return httpx.Response(502, text="bad gateway")
        return response

    def keys(self, path: str) -> list[str | None]:
        return [key for _m, p, key, _f in self.log if p == path]


class AsyncFaultTransport(httpx.AsyncBaseTransport):
    """``FaultTransport`` for ``httpx.AsyncClient``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, faults: dict[str, list[str]] | None = None):
        self.inner = inner
        self.faults = {k: list(v) for k, v in (faults or {}).items()}
        self.log: list[tuple[str, str, str | None, str | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        fault = _fault(self.faults, request.url.path)
        self.log.append((request.method, request.url.path, request.headers.get("idempotency-key"), fault))
        if fault == "connect":
            raise httpx.ConnectError("connection refused", request=request)
        if fault == "503":
            return httpx.Response(503, json=BUSY)
        if fault == "in_use":
            return httpx.Response(409, json=IN_USE)
        response = await self.inner.handle_async_request(request)
        await response.aread()
        if fault == "lost":
            raise httpx.ReadTimeout("the answer was lost", request=request)
        if fault == "502":
            return httpx.Response(502, text="bad gateway")
        return response

    def keys(self, path: str) -> list[str | None]:
        return [key for _m, p, key, _f in self.log if p == path]
