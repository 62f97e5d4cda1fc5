"""The interface both clients implement (JSON-shaped dicts in and out, the HTTP API's shapes)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from billing.client.spool import Spool


def quota_body(customer: str, meter: str | None, charge: str | None, quantity, model, task, tokens, cost,
               steps, retry=None, depth=None) -> dict[str, Any]:
    """The JSON body of a check or reserve."""
    body: dict[str, Any] = {"customer": customer, "quantity": str(quantity)}
    if charge is not None:
        body["charge"] = charge
    else:
        body["meter"] = meter
    for name, value in (("model", model), ("task", task), ("tokens", tokens), ("steps", steps), ("retry", retry),
                        ("depth", depth)):
        if value is not None:
            body[name] = value
    if cost:
        body["cost"] = str(cost)
    return body


def utc_now() -> datetime:
    return datetime.now(UTC)


_RANDOM_BYTES = 4096  # 256 ids per read of the operating system's random source
_random = {"pool": b"", "at": 0}
_random_lock = threading.Lock()


def random_uuid() -> uuid.UUID:
    """``uuid.uuid4()`` from a pooled ``os.urandom`` read: the same randomness, one system call
    per 256 ids instead of one each (on ``guarded_call``'s path, each would let another thread
    take the GIL). A forked child starts a pool of its own (never the parent's ids)."""
    with _random_lock:
        at = _random["at"]
        if at + 16 > len(_random["pool"]):
            _random["pool"], at = os.urandom(_RANDOM_BYTES), 0
        _random["at"] = at + 16
        raw = _random["pool"][at:at + 16]
    return uuid.UUID(bytes=raw, version=4)


def _fresh_pool_after_fork() -> None:
    global _random_lock
    _random_lock = threading.Lock()
    _random.update(pool=b"", at=0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_pool_after_fork)


class BillingClient:
    """``check`` / ``reserve`` / ``commit`` / ``release`` / ``record`` / ``usage`` /
    ``metering`` / ``entitlement``, raising ``BillingError`` with the API's stable codes.

    Writes take an ``idempotency_key`` (HTTP: sent as ``Idempotency-Key``; a fresh one per
    call when not given). ``spool``: where ``guarded_call`` keeps commits until they are
    acknowledged (None: none). ``now()``: the clock that stamps ``guarded_call``'s events."""

    spool: "Spool | None" = None

    def now(self) -> datetime:
        return utc_now()

    def is_transient(self, exc: BaseException) -> bool:
        """A failure that sending the same request again may cure (the service unreachable)."""
        return False

    def check(self, customer: str, meter: str | None = None, *, charge: str | None = None,
              quantity: Decimal | int | str = 1, model: str | None = None, task: str | None = None,
              tokens: int | None = None, cost: Decimal | int | str = 0, steps: int | None = None,
              retry: int | None = None, depth: int | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def reserve(self, customer: str, meter: str | None = None, *, charge: str | None = None,
                quantity: Decimal | int | str = 1, model: str | None = None, task: str | None = None,
                tokens: int | None = None, cost: Decimal | int | str = 0, steps: int | None = None,
                retry: int | None = None, depth: int | None = None, ttl: float = 60.0, request_id: str | None = None,
                idempotency_key: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def commit(self, reservation_id: str, event: dict[str, Any] | None = None, *,
               idempotency_key: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def release(self, reservation_id: str, *, idempotency_key: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def record(self, events: Iterable[dict[str, Any]], *, idempotency_key: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def usage(self, customer: str) -> dict[str, Any]:
        raise NotImplementedError

    def metering(self, customer: str) -> dict[str, Any]:
        """What the customer's plan meters (``GET /v1/customers/{id}/metering``)."""
        raise NotImplementedError

    def entitlement(self, customer: str, feature: str) -> dict[str, Any]:
        """Whether the customer has ``feature`` and its value (``POST /v1/entitlements/check``)."""
        raise NotImplementedError

    # ---- used by guarded_call's flow (cheap, non-blocking)
    def has_spool(self) -> bool:
        return self.spool is not None

    def commits_in_background(self) -> bool:
        """``guarded_call`` hands its commits to ``enqueue_commits`` (journaled, sent by
        background threads: ``billing.client.journal``) instead of sending them itself."""
        return False

    def enqueue_commits(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def metering_cached(self, customer: str, ttl: float) -> tuple[dict[str, Any] | None] | None:
        """``(metering,)`` remembered less than ``ttl`` seconds ago (None inside: the service
        has no metering route), else None."""
        hit = self.__dict__.get("_metering", {}).get(customer)
        if hit is not None and time.monotonic() - hit[0] < ttl:
            return (hit[1],)
        return None

    def remember_metering(self, customer: str, metering: dict[str, Any] | None) -> None:
        cache = self.__dict__.setdefault("_metering", {})
        if len(cache) > 10_000:
            cache.clear()
        cache[customer] = (time.monotonic(), metering)

    def flush_spool(self, *, limit: int | None = None) -> dict[str, Any]:
        """Send the spooled commits again until acknowledged (see ``billing.client.spool``):
        ``{"delivered", "rejected", "pending", "errors"}``."""
        if self.spool is None:
            return {"delivered": 0, "rejected": 0, "pending": 0, "errors": []}
        return self.spool.flush(self, limit=limit).to_json()
