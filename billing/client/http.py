"""``HttpClient`` and ``AsyncHttpClient``: the client interface over the HTTP API (httpx;
``HttpClient`` to a plain ``http://`` service without a proxy: its own keep-alive
connections, ``billing.client.wire``).

Every write (reserve, commit, release, record) carries an ``Idempotency-Key`` (a fresh
uuid4 per logical write, ``base.random_uuid`` unless given; the same on each retry of that write), and failures
that may pass are retried as ``billing.client.retry`` says (connection errors, timeouts,
5xx, ``409 idempotency_key_in_use``; never another 4xx). Reads (check, usage, metering,
entitlement) are retried the same way, without a key.

``spool_dir``: where ``guarded_call`` keeps its commits until acknowledged
(``billing.client.spool``). Default: ``$BILLING_CLIENT_SPOOL_DIR``, else
``$XDG_STATE_HOME/billing/spool/<host>-<hash of the base URL>`` (``~/.local/state/...``);
``False``: no spool.

``background_commits=True`` (``HttpClient`` only, with a spool): ``guarded_call`` appends its
commits to the spool's journal (one write, no fsync: it survives a ``kill -9`` of the app)
and returns; background threads fsync the journal once for many calls and send the commits
(``billing.client.journal``; ``drain()`` waits for them, ``close()`` drains first).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from billing.client import wire
from billing.client.base import BillingClient, quota_body, random_uuid, utc_now
from billing.client.errors import ApiError
from billing.client.ops import arun
from billing.client.retry import RetryPolicy
from billing.client.spool import Spool, dumps_bytes, flush_flow

log = logging.getLogger("billing.client")
SPOOL_ENV = "BILLING_CLIENT_SPOOL_DIR"


def default_spool_dir(base_url: str) -> Path:
    """``$BILLING_CLIENT_SPOOL_DIR``, else a directory per service under the user's state dir."""
    if os.environ.get(SPOOL_ENV):
        return Path(os.environ[SPOOL_ENV])
    try:
        state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    except (KeyError, RuntimeError):  # no home directory
        state = Path(tempfile.gettempdir()) / f"billing-state-{os.getuid() if hasattr(os, 'getuid') else 0}"
    host = re.sub(r"[^A-Za-z0-9.-]", "_", urlsplit(base_url).netloc or "local")[:60]
    return state / "billing" / "spool" / f"{host}-{hashlib.sha256(base_url.encode()).hexdigest()[:12]}"


def new_key() -> str:
    return str(random_uuid())


def _retry_after(response: Any) -> float | None:
    try:
        value = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def answer(response: Any) -> Any:
    """The JSON of a 2xx answer (an ``httpx.Response`` or a ``billing.client.wire.Response``);
    an ``ApiError`` for anything else (a 2xx without JSON is treated as a bad gateway:
    retryable, the write's key makes it safe)."""
    try:
        data = response.json()
    except ValueError:
        data = None
    status = response.status_code
    if status >= 400:
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):  # a server before the Stripe shape: {"code", "message", "details"}
            error = data if isinstance(data, dict) and "code" in data else None
        if error is not None and "code" in error:
            raise ApiError(str(error.get("message", "")), code=str(error["code"]), status=status,
                           details=error.get("details"), retry_after=_retry_after(response),
                           type=error.get("type"), param=error.get("param"),
                           request_id=error.get("request_id") or response.headers.get("x-request-id"))
        raise ApiError(response.text[:500] or response.reason_phrase, code=f"http_{status}", status=status,
                       retry_after=_retry_after(response))
    if data is None:
        raise ApiError(f"HTTP {status} without a JSON body", code="bad_response", status=502)
    return data


class _HttpBase(BillingClient):
    """The requests (shared by both clients); ``_send`` performs one with retries."""

    is_async = False

    def __init__(self, base_url: str, api_key: str, *, retry: RetryPolicy | None = None,
                 spool_dir: str | os.PathLike[str] | None | bool = None,
                 clock: Callable[[], datetime] | None = None):
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        if spool_dir is False:
            self.spool = None
        else:
            self.spool = Spool(default_spool_dir(self.base_url) if spool_dir in (None, True) else spool_dir)
        self._clock = clock or utc_now

    def now(self) -> datetime:
        return self._clock()

    def is_transient(self, exc: BaseException) -> bool:
        from billing.client.retry import transient

        return transient(exc)

    def _send(self, method: str, path: str, body: Any = None, *, key: str | None = None) -> Any:
        raise NotImplementedError

    def _request(self, method: str, path: str, body: Any, key: str | None) -> dict[str, Any]:
        headers = dict(self.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        # canonical JSON: a write sent again later (from the spool) is the same bytes as the first
        content = None if body is None else dumps_bytes(body)
        return {"method": method, "url": path, "content": content, "headers": headers}

    def _log_retry(self, method: str, path: str, exc: BaseException, attempt: int, wait: float) -> None:
        log.info("billing %s %s failed (%s), try %d again in %.2fs", method, path, exc, attempt + 2, wait)

    # ------------------------------------------------------------------ the API
    def check(self, customer, meter=None, *, charge=None, quantity=1, model=None, task=None, tokens=None, cost=0,
              steps=None, retry=None, depth=None):
        return self._send("POST", "/v1/quota/check",
                          quota_body(customer, meter, charge, quantity, model, task, tokens, cost, steps, retry, depth))

    def reserve(self, customer, meter=None, *, charge=None, quantity=1, model=None, task=None, tokens=None, cost=0,
                steps=None, retry=None, depth=None, ttl=60.0, request_id=None, idempotency_key=None):
        body = quota_body(customer, meter, charge, quantity, model, task, tokens, cost, steps, retry, depth)
        body["ttl_seconds"] = ttl
        if request_id is not None:
            body["request_id"] = request_id
        return self._send("POST", "/v1/quota/reserve", body, key=idempotency_key or new_key())

    def commit(self, reservation_id, event=None, *, idempotency_key=None):
        return self._send("POST", "/v1/quota/commit", {"reservation_id": reservation_id, "event": event},
                          key=idempotency_key or new_key())

    def release(self, reservation_id, *, idempotency_key=None):
        return self._send("POST", "/v1/quota/release", {"reservation_id": reservation_id},
                          key=idempotency_key or new_key())

    def record(self, events, *, idempotency_key=None):
        return self._send("POST", "/v1/events", {"events": list(events)}, key=idempotency_key or new_key())

    def usage(self, customer):
        return self._send("GET", f"/v1/customers/{quote(customer, safe='')}/usage")

    def metering(self, customer):
        return self._send("GET", f"/v1/customers/{quote(customer, safe='')}/metering")

    def entitlement(self, customer, feature):
        return self._send("POST", "/v1/entitlements/check", {"customer": customer, "feature": feature})


class HttpClient(_HttpBase):
    """Over HTTP (one connection pool; use as a context manager or ``close()``): for a plain
    ``http://`` service without a proxy, the client's own keep-alive connections
    (``billing.client.wire``: the same errors, retries and timeouts at an eighth of the CPU),
    else ``httpx.Client``. ``client``: an ``httpx.Client`` to use (e.g. a test client);
    ``transport``: an httpx transport for the client made here."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0, client: httpx.Client | None = None,
                 transport: httpx.BaseTransport | None = None, retry: RetryPolicy | None = None,
                 spool_dir: str | os.PathLike[str] | None | bool = None,
                 clock: Callable[[], datetime] | None = None, sleep: Callable[[float], None] = time.sleep,
                 background_commits: bool = False):
        super().__init__(base_url, api_key, retry=retry, spool_dir=spool_dir, clock=clock)
        if client is None and transport is None and isinstance(timeout, (int, float)) and wire.usable(self.base_url):
            self._http: Any = wire.RawHttp(self.base_url, timeout)
        else:
            self._http = client or httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._sleep = sleep
        if background_commits and self.spool is None:
            raise ValueError("background_commits needs a spool (spool_dir is False)")
        self._background_wanted = background_commits
        self._background = None
        self._background_lock = threading.Lock()

    def commits_in_background(self) -> bool:
        return self._background_wanted

    def enqueue_commits(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        background = self._background
        if background is None:
            with self._background_lock:
                if self._background is None:
                    from billing.client.journal import Background

                    self._background = Background(self, self.spool)
                    self.spool.background = self._background
                background = self._background
        return background.enqueue(entries)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every commit handed to the background is settled (delivered, spooled
        or refused) and the journal is on disk; False when ``timeout`` passed first."""
        return True if self._background is None else self._background.drain(timeout)

    def background_counts(self) -> dict[str, int]:
        """Commits the background delivered, kept in the spool (unreachable) and refused."""
        b = self._background
        return {"delivered": b.delivered, "kept": b.kept, "rejected": b.rejected} if b else \
            {"delivered": 0, "kept": 0, "rejected": 0}

    def close(self, timeout: float = 10.0) -> None:
        """Drain the background commits (up to ``timeout`` seconds: what is left stays in the
        journal, sent by the next flush), then close the connections."""
        if self._background is not None:
            self._background.close(timeout)
            self._background = None
            self.spool.background = None
        self._http.close()

    def __enter__(self) -> "HttpClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _send(self, method: str, path: str, body: Any = None, *, key: str | None = None) -> Any:
        request = self._request(method, path, body, key)
        start, attempt = time.monotonic(), 0
        while True:
            try:
                return answer(self._http.request(**request))
            except (httpx.TransportError, ApiError) as exc:
                wait = self.retry.next_delay(attempt, time.monotonic() - start, exc)
                if wait is None:
                    raise
                self._log_retry(method, path, exc, attempt, wait)
                self._sleep(wait)
                attempt += 1


class AsyncHttpClient(_HttpBase):
    """``HttpClient`` with ``httpx.AsyncClient``: every method is a coroutine (``async with``
    or ``await aclose()``). For ``async_guarded_call`` and ``async_guarded_stream``."""

    is_async = True

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0,
                 client: httpx.AsyncClient | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 retry: RetryPolicy | None = None, spool_dir: str | os.PathLike[str] | None | bool = None,
                 clock: Callable[[], datetime] | None = None):
        super().__init__(base_url, api_key, retry=retry, spool_dir=spool_dir, clock=clock)
        self._http = client or httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncHttpClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def _send(self, method: str, path: str, body: Any = None, *, key: str | None = None) -> Any:
        request = self._request(method, path, body, key)
        start, attempt = time.monotonic(), 0
        while True:
            try:
                return answer(await self._http.request(**request))
            except (httpx.TransportError, ApiError) as exc:
                wait = self.retry.next_delay(attempt, time.monotonic() - start, exc)
                if wait is None:
                    raise
                self._log_retry(method, path, exc, attempt, wait)
                await asyncio.sleep(wait)
                attempt += 1

    async def flush_spool(self, *, limit: int | None = None) -> dict[str, Any]:  # type: ignore[override]
        if self.spool is None:
            return {"delivered": 0, "rejected": 0, "pending": 0, "errors": []}
        return (await arun(flush_flow(limit), self)).to_json()
