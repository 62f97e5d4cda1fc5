"""The outermost ASGI layer of the API: bounded request bodies and a last-resort answer.

``billing.api.fastpath.BillingAPI`` calls ``guard`` in front of FastAPI's whole stack (every
route, the optional routers too). Its two fast routes get the same size rule more cheaply
(``declared_over`` + ``read_body`` at their own 64 KiB limit, ``refuse``) and answer their
own errors, so they skip the last resort's bookkeeping (about 0.5 us a request).

- **Size.** A request body over ``max_bytes`` (``BILLING_MAX_REQUEST_BYTES``, 5 MiB by
  default) is answered ``413 {"code": "request_too_large"}`` before any of it is parsed and
  before authentication. A ``Content-Length`` over the limit is refused before a byte of
  the body is read; a body without one (``Transfer-Encoding: chunked``) is read here first,
  as it streams in, and refused as soon as it passes the limit (then handed to the app whole
  when it fits). Either way the 413 closes the connection, so the server never reads the
  rest. A request holds at most the limit (plus uvicorn's 64 KiB read buffer) in memory.
- **Last resort.** An exception that reaches this layer before the response started is
  answered as JSON ``500 {"code": "internal_error"}`` on the same keep-alive connection. One
  that reaches it after the response was sent (Starlette re-raises every error after its
  own 500) is logged and dropped: re-raised, uvicorn would close the connection of a
  request that was fully answered. Only a response cut off half-way is re-raised (its
  connection cannot be reused).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from billing.api.errors import error_json
from billing.errors import ErrorCode

log = logging.getLogger("billing.api")

DEFAULT_MAX_REQUEST_BYTES = 5 * 1024 * 1024

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
_NOT_STARTED, _STARTED, _COMPLETE = 0, 1, 2


def too_large_message(max_bytes: int) -> str:
    return f"the request body is over the limit of {max_bytes:,} bytes"


def declared_over(scope: dict, max_bytes: int) -> bool:
    """Whether the request's Content-Length is over ``max_bytes`` (then ``refuse`` it)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.isdigit() and int(value) > max_bytes
    return False


async def guard(app: ASGIApp, scope: dict, receive: Callable, send: Callable, max_bytes: int) -> None:
    """Serve one HTTP request through ``app`` with the size limit and the last resort."""
    declared, chunked = _framing(scope["headers"])
    if declared is not None and declared > max_bytes:
        await refuse(send, max_bytes, scope)
        return
    if chunked and declared is None:  # no length given: read it all (at most max_bytes) first
        body = await read_body(receive, max_bytes)
        if body is None:  # the client went away
            return
        if body is TOO_LARGE:
            await refuse(send, max_bytes, scope)
            return
        receive = _replay(body, receive)
    state = _NOT_STARTED

    async def tracked_send(message: dict) -> None:
        nonlocal state
        if message["type"] == "http.response.start":
            state = _STARTED
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            state = _COMPLETE
        await send(message)

    try:
        await app(scope, receive, tracked_send)
    except Exception:  # noqa: BLE001 - the last resort: a JSON answer, never a dropped connection
        if state == _NOT_STARTED:
            log.exception("unhandled error")
            await _answer(send, 500, error_json(str(ErrorCode.INTERNAL), "internal error", scope=scope))
        elif state == _STARTED:
            raise  # a response cut off half-way: uvicorn closes the connection
        else:
            log.warning("an error after %s %s was answered (logged above); the connection stays open",
                        scope.get("method"), scope.get("path"), exc_info=log.isEnabledFor(logging.DEBUG))


def _framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(Content-Length, whether a Transfer-Encoding is given)."""
    declared, chunked = None, False
    for name, value in headers:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:  # the HTTP server refuses these before us; be safe anyway
                pass
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked


TOO_LARGE = b"<too large>"  # a marker, compared by identity


async def read_body(receive: Callable, max_bytes: int) -> bytes | None:
    """The whole body; ``TOO_LARGE`` past ``max_bytes`` (the rest is not read); None when the
    client went away."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return TOO_LARGE
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Callable) -> Callable:
    """A ``receive`` that gives the body read already, then whatever the server says next."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> dict:
        return pending.pop() if pending else await receive()
    return replay


async def refuse(send: Callable, max_bytes: int, scope: dict | None = None) -> None:
    """413 ``request_too_large``, closing the connection (the rest of the body is not read)."""
    body = error_json(str(ErrorCode.REQUEST_TOO_LARGE), too_large_message(max_bytes), scope=scope)
    await _answer(send, 413, body, close=True)


async def _answer(send: Callable, status: int, body: bytes, *, close: bool = False) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
