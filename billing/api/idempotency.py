"""The ``Idempotency-Key`` header on every POST, with Stripe's semantics (an ASGI layer in
front of every route, the fast path included: ``BillingAPI.add_layer``).

- The key: 1-255 printable ASCII characters (one header; a longer, empty or non-printable
  one is 400 ``idempotency_key_invalid``). Keys are scoped per API key: the same key sent
  with two API keys is two keys. A request without a valid API key is served as if it had
  no key (it fails authentication, or needs none, as the Stripe webhook).
- The first request with a key runs and its response is stored with the request's
  fingerprint (method, path, query and the JSON body with its keys sorted). The same key
  with the same fingerprint again: the stored response (status, headers, body) with
  ``Idempotent-Replayed: true``, and nothing runs. The same key with another fingerprint:
  409 ``idempotency_key_reused``.
- While the first request runs, another with its key gets 409 ``idempotency_key_in_use``
  with ``Retry-After: 1`` (retry later with the same key). A server that dies mid-request
  leaves its claim behind for at most ``lease`` seconds (renewed every ``renew_every``
  seconds while the request runs); then the key's next request runs.
- Stored: every 2xx, 3xx and 4xx response except 401, 408, 409, 425 and 429 (retry those
  with the same key: it runs again); never a 5xx. A response not stored frees the key.
- Kept ``retention`` (24 hours) from the first request; a key past it is a new key. Each
  server deletes expired records at most every ``purge_every`` seconds, in the background.
- Records live in the database (``billing.store.idempotency``): servers sharing one
  database share the keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any
from datetime import datetime, timedelta

import anyio
import orjson
from starlette.concurrency import run_in_threadpool

from billing.api.errors import error_response, unavailable_response
from billing.api.routes import _api_key
from billing.errors import ErrorCode
from billing.reservations.durability import flushed_later
from billing.store.idempotency import IN_USE, OWNED, REPLAY, REUSED, IdempotencyStore
from billing.store.types import to_us

log = logging.getLogger("billing.api")

HEADER = b"idempotency-key"
REPLAYED = (b"idempotent-replayed", b"true")
MAX_KEY = 255
NOT_STORED = frozenset({401, 408, 409, 425, 429})  # and every status >= 500
_DROPPED_HEADERS = frozenset({b"content-length", b"date", b"server", b"transfer-encoding", b"connection"})


def key_problem(values: list[bytes]) -> str | None:
    """Why these ``Idempotency-Key`` header values are not one valid key (None: they are)."""
    if len(set(values)) > 1:
        return "send one Idempotency-Key header"
    value = values[0]
    if not 1 <= len(value) <= MAX_KEY:
        return f"an Idempotency-Key has 1-{MAX_KEY} characters, this one {len(value)}"
    if not all(0x20 <= b <= 0x7E for b in value):
        return "an Idempotency-Key is printable ASCII characters"
    return None


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    """SHA-256 of the request's parameters: a JSON body counts by content (key order and
    spacing do not matter), anything else byte for byte."""
    try:
        canonical = orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS) if body else b""
    except orjson.JSONDecodeError:
        canonical = b"raw:" + body
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode("utf-8", "surrogatepass"), query, canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyLayer:
    def __init__(self, app: Callable, store: IdempotencyStore, keys, clock: Callable[[], datetime], *,
                 retention: timedelta = timedelta(hours=24), lease: float = 30.0, renew_every: float = 10.0,
                 purge_every: float = 60.0, api: Any = None):
        self.app = app
        self.api = api  # the BillingAPI (its ``fast_sync`` routes), or None
        self.store = store
        self.keys = keys  # billing.api.auth.KeyStore
        self.clock = clock
        self.retention_us = int(retention.total_seconds() * 1_000_000)
        self.lease_us = int(lease * 1_000_000)
        self.renew_every = renew_every
        self.purge_every = purge_every
        self._next_purge = time.monotonic() + purge_every
        self._purging: asyncio.Future | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        values = [value for name, value in headers if name == HEADER]
        if not values:
            await self.app(scope, receive, send)
            return
        auth = next((v.decode("latin-1") for n, v in headers if n == b"authorization"), None)
        api_key = next((v.decode("latin-1") for n, v in headers if n == b"x-api-key"), None)
        problem = key_problem(values)
        if problem is not None:
            if await _read_body(receive) is not None:  # read: the connection stays usable
                await _error(scope, receive, send, 400, ErrorCode.IDEMPOTENCY_KEY_INVALID, problem)
            return
        try:
            principal = self.keys.authenticate(_api_key(auth, api_key))
        except Exception:  # noqa: BLE001 - the route answers (401 or its own error), or needs no API key
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:  # the client went away before sending its request: nothing ran
            return
        api = self.api
        handler = api.fast_sync.get((scope["method"], scope["path"])) if api is not None else None
        if handler is not None and scope.get("fast_route") and len(body) <= api.max_body:
            await self._run_in_one_hop(scope, receive, send, principal.key_id, values[0].decode("ascii"), body,
                                       handler)
            return
        await self._run(scope, receive, send, principal.key_id, values[0].decode("ascii"), body)

    async def _run_in_one_hop(self, scope: dict, receive: Callable, send: Callable, owner_scope: str, key: str,
                              body: bytes, handler: Callable) -> None:
        """A blocking fast route (``BillingAPI.fast_sync``): the claim, the handler and the
        record of its answer in one worker thread (the same rules as ``_run`` and ``_own``)."""
        from billing.api.fastpath import answer_sync

        owner, api = uuid.uuid4().hex, self.api
        fp = fingerprint(scope["method"], scope["path"], scope["query_string"], body)
        scope["app"] = api

        def run() -> tuple[Any, tuple[int, bytes, list] | None]:
            claim = self.store.claim(owner_scope, key, fp, owner, now_us=to_us(self.clock()), lease_us=self.lease_us,
                                     retention_us=self.retention_us)
            if claim.outcome != OWNED:
                return claim, None
            # the writes may skip their own WAL flush: the record below is a durable write
            # after them (billing.reservations.durability)
            with flushed_later() as promise:
                try:
                    status, payload, headers = answer_sync(handler, api, scope, body)
                except BaseException:
                    if not self._forget_sync(owner_scope, key, owner) and promise.owed:
                        self.store.flush(owner_scope, key)
                    raise
            wrote = False
            if status < 500 and status not in NOT_STORED:
                kept = orjson.dumps([[n.decode("latin-1"), v.decode("latin-1")] for n, v in headers
                                     if n.lower() not in _DROPPED_HEADERS]).decode()
                try:
                    wrote = self.store.finish(owner_scope, key, owner, status, kept, payload)
                except Exception:  # noqa: BLE001 - the request did run: answer it; a retry after the lease runs again
                    log.exception("could not store the response of Idempotency-Key %r", key)
            else:
                wrote = self._forget_sync(owner_scope, key, owner)
            if promise.owed and not wrote:  # nothing durable written after the batch: make it durable now
                self.store.flush(owner_scope, key)  # (raises: answered 503, the client retries with the key)
            return claim, (status, payload, headers)

        heartbeat = asyncio.ensure_future(self._heartbeat(owner_scope, key, owner))
        try:
            claim, answer = await run_in_threadpool(run)
        except Exception as exc:  # noqa: BLE001 - the claim failed (database busy or unreachable): nothing ran
            await unavailable_response(exc, scope)(scope, receive, send)  # 503: retry with the same key
            return
        finally:
            heartbeat.cancel()
        self._maybe_purge()
        if answer is None:
            await self._answer_claim(scope, receive, send, claim)
            return
        status, payload, headers = answer
        await _send(send, status, headers, payload)

    def _forget_sync(self, owner_scope: str, key: str, owner: str) -> bool:
        """Release the key; True when a record was deleted (a durable write)."""
        try:
            return self.store.release(owner_scope, key, owner)
        except Exception:  # noqa: BLE001 - the claim then lapses with its lease
            log.exception("could not release Idempotency-Key %r", key)
            return False

    async def _run(self, scope: dict, receive: Callable, send: Callable, owner_scope: str, key: str,
                   body: bytes) -> None:
        owner = uuid.uuid4().hex
        try:
            claim = await run_in_threadpool(
                self.store.claim, owner_scope, key,
                fingerprint(scope["method"], scope["path"], scope["query_string"], body), owner,
                now_us=to_us(self.clock()), lease_us=self.lease_us, retention_us=self.retention_us)
        except Exception as exc:  # noqa: BLE001 - the database is busy or unreachable: nothing ran
            await unavailable_response(exc, scope)(scope, receive, send)  # 503: retry with the same key
            return
        self._maybe_purge()
        if claim.outcome == OWNED:
            await self._own(scope, receive, send, owner_scope, key, owner, body)
            return
        await self._answer_claim(scope, receive, send, claim)

    async def _answer_claim(self, scope: dict, receive: Callable, send: Callable, claim: Any) -> None:
        """The answer to a key another request holds: reused, in use, or its stored answer."""
        if claim.outcome == REUSED:
            await _error(scope, receive, send, 409, ErrorCode.IDEMPOTENCY_KEY_REUSED,
                         "this Idempotency-Key was used with other parameters (another path or body)")
            return
        if claim.outcome == IN_USE:
            await _error(scope, receive, send, 409, ErrorCode.IDEMPOTENCY_KEY_IN_USE,
                         "a request with this Idempotency-Key is still running; retry later with the same key",
                         [(b"retry-after", b"1")])
            return
        if claim.outcome == REPLAY:
            headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in orjson.loads(claim.headers or "[]")]
            await _send(send, claim.status, [*headers, REPLAYED], claim.body or b"")

    async def _own(self, scope: dict, receive: Callable, send: Callable, owner_scope: str, key: str, owner: str,
                   body: bytes) -> None:
        start: dict | None = None
        parts: list[bytes] = []
        given = False

        async def replay_body() -> dict:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def capture(message: dict) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        heartbeat = asyncio.ensure_future(self._heartbeat(owner_scope, key, owner))
        try:
            await self.app(scope, replay_body, capture)
        except BaseException:
            heartbeat.cancel()
            with anyio.CancelScope(shield=True):  # also when the request was cancelled
                await self._forget(owner_scope, key, owner)
            if start is not None:  # the app's last-resort handler answered (500), then re-raised
                await _send(send, start["status"], start.get("headers", []), b"".join(parts))
            raise
        heartbeat.cancel()
        if start is None:  # nothing answered (the client went away)
            await self._forget(owner_scope, key, owner)
            return
        status, headers, payload = start["status"], list(start.get("headers", [])), b"".join(parts)
        if status < 500 and status not in NOT_STORED:
            kept = orjson.dumps([[n.decode("latin-1"), v.decode("latin-1")] for n, v in headers
                                 if n.lower() not in _DROPPED_HEADERS]).decode()
            try:
                await run_in_threadpool(self.store.finish, owner_scope, key, owner, status, kept, payload)
            except Exception:  # noqa: BLE001 - the request did run: answer it; a retry after the lease runs again
                log.exception("could not store the response of Idempotency-Key %r", key)
        else:
            await self._forget(owner_scope, key, owner)
        await _send(send, status, headers, payload)

    async def _forget(self, owner_scope: str, key: str, owner: str) -> None:
        try:
            await run_in_threadpool(self.store.release, owner_scope, key, owner)
        except Exception:  # noqa: BLE001 - the claim then lapses with its lease
            log.exception("could not release Idempotency-Key %r", key)

    async def _heartbeat(self, owner_scope: str, key: str, owner: str) -> None:
        """Renew the claim's lease while the request runs."""
        while True:
            await asyncio.sleep(self.renew_every)
            try:
                until = to_us(self.clock()) + self.lease_us
                await run_in_threadpool(self.store.renew, owner_scope, key, owner, until)
            except Exception:  # noqa: BLE001 - try again at the next beat
                log.exception("could not renew Idempotency-Key %r", key)

    def _maybe_purge(self) -> None:
        """Delete expired records in the background, at most every ``purge_every`` seconds."""
        if time.monotonic() < self._next_purge or (self._purging is not None and not self._purging.done()):
            return
        self._next_purge = time.monotonic() + self.purge_every
        self._purging = asyncio.ensure_future(run_in_threadpool(self.purge))

    def purge(self) -> int:
        """Delete the records past retention now (returns how many)."""
        try:
            return self.store.purge(now_us=to_us(self.clock()), retention_us=self.retention_us)
        except Exception:  # noqa: BLE001 - housekeeping: the next purge tries again
            log.exception("could not purge idempotency records")
            return 0


def install(app, engine, clock: Callable[[], datetime], *, retention: timedelta = timedelta(hours=24),
            lease: float = 30.0) -> IdempotencyLayer:
    """Put the layer in front of ``app`` (a ``BillingAPI``) over ``engine``'s records; it is
    also ``app.state.idempotency``."""
    layer: list[IdempotencyLayer] = []

    def wrap(inner: Callable) -> IdempotencyLayer:
        layer.append(IdempotencyLayer(inner, IdempotencyStore(engine), app.state.keys, clock, retention=retention,
                                      lease=lease, renew_every=min(10.0, lease / 3),
                                      api=app if hasattr(app, "fast_sync") else None))
        return layer[0]

    app.add_layer(wrap)
    app.state.idempotency = layer[0]
    return layer[0]


async def _read_body(receive: Callable) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send: Callable, status: int, headers: list, body: bytes) -> None:
    headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _error(scope: dict, receive: Callable, send: Callable, status: int, code: ErrorCode, message: str,
                 headers: list | None = None) -> None:
    response = error_response(str(code), message, param="Idempotency-Key", scope=scope, status=status)
    response.raw_headers.extend(headers or [])
    await response(scope, receive, send)
