"""The Stripe client, built only from settings, and our own retry policy.

``stripe.StripeClient`` is created with ``max_network_retries=0`` and an httpx transport with
a short timeout: we retry ourselves, and every retry of a *create* first looks the object up
again (by our metadata), so a request that timed out after Stripe executed it is never
executed twice, even where idempotency keys are not honoured (or have expired after 24 h).

The API key is never logged or put in an error message.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import stripe

from billing.config import Settings, get_settings
from billing.errors import BillingError, ErrorCode

T = TypeVar("T")

DEFAULT_TIMEOUT = 20.0


def make_client(settings: Settings | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> stripe.StripeClient:
    """A StripeClient from ``BILLING_STRIPE_API_KEY`` / ``BILLING_STRIPE_API_BASE``."""
    settings = settings or get_settings()
    if settings.stripe_api_key is None or not settings.stripe_api_key.get_secret_value().strip():
        raise BillingError("BILLING_STRIPE_API_KEY is not set", code=ErrorCode.VALIDATION)
    base = (settings.stripe_api_base or "").strip() or None
    if base is not None:
        try:
            parts = urlsplit(base)
            _ = parts.port  # ValueError on a port that is not a number
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            valid = False
        if not valid:
            raise BillingError("BILLING_STRIPE_API_BASE is not an http(s) URL (for example "
                               "http://127.0.0.1:12111)", code=ErrorCode.VALIDATION)
    return client_for(settings.stripe_api_key.get_secret_value().strip(), base, timeout=timeout)


def client_for(api_key: str, api_base: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> stripe.StripeClient:
    kwargs: dict[str, Any] = {}
    if api_base:
        kwargs["base_addresses"] = {"api": api_base.rstrip("/")}
    return stripe.StripeClient(api_key, max_network_retries=0,
                               http_client=stripe.HTTPXClient(timeout=timeout, allow_sync_methods=True), **kwargs)


def is_retryable(exc: BaseException) -> bool:
    """Network errors (timeouts, dropped connections), 409 (concurrent idempotent request),
    429 and 5xx. Anything else (4xx) is a real answer and retrying would not change it."""
    if isinstance(exc, stripe.APIConnectionError):
        return True
    if isinstance(exc, stripe.StripeError):
        status = exc.http_status
        return status is not None and (status in (409, 429) or status >= 500)
    return False


# secret API keys, restricted keys and webhook secrets, as Stripe formats them
_SECRET = re.compile(r"\b(sk|rk)_(test|live)_[A-Za-z0-9]+|\bwhsec_[A-Za-z0-9]+")


def redact(text: str) -> str:
    """``text`` with anything shaped like a Stripe secret masked (Stripe's own 401 message
    quotes part of the key)."""
    return _SECRET.sub(lambda m: m.group(0).split("_", 2)[0] + "_***", text)


def describe(exc: BaseException) -> str:
    """A short, key-free description of a Stripe failure."""
    if isinstance(exc, stripe.APIConnectionError):
        return "network error talking to Stripe (timeout or connection lost)"
    if isinstance(exc, stripe.StripeError):
        msg = exc.user_message or (exc.error.message if exc.error else None) or type(exc).__name__
        return redact(f"Stripe error {exc.http_status}: {msg}")
    return redact(f"{type(exc).__name__}: {exc}")


class Retrier:
    """Run a callable, retrying retryable Stripe failures with a short exponential backoff."""

    def __init__(self, attempts: int = 3, base_delay: float = 0.2, sleep: Callable[[float], None] = time.sleep):
        self.attempts = max(1, attempts)
        self.base_delay = base_delay
        self.sleep = sleep

    def __call__(self, fn: Callable[[], T]) -> T:
        for attempt in range(self.attempts):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - filtered by is_retryable
                if not is_retryable(exc) or attempt == self.attempts - 1:
                    raise
                self.sleep(self.base_delay * (2 ** attempt))
        raise AssertionError("unreachable")


def plain(obj: Any) -> dict:
    """A StripeObject (or dict) as a plain, recursive dict."""
    if isinstance(obj, dict):
        return obj
    return obj.to_dict(recursive=True)


def list_all(fetch: Callable[[dict], Any], params: dict | None = None, *, page_size: int = 100) -> Iterator[dict]:
    """Every item of a Stripe list endpoint, page by page (``starting_after``), as dicts."""
    params = dict(params or {})
    params["limit"] = page_size
    while True:
        page = plain(fetch(params))
        data = page.get("data") or []
        yield from data
        if not page.get("has_more") or not data:
            return
        params["starting_after"] = data[-1]["id"]
