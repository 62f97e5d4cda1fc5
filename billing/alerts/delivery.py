"""Outgoing webhooks: deliver the outbox (``billing.alerts.outbox.Outbox``) to one URL,
HMAC-signed, at least once, retried with exponential backoff. ``billing worker`` runs
``WebhookDispatcher.run_once`` as its ``outbox`` job; ``billing serve`` can run
``run_forever`` in a thread (both at once are safe: rows are claimed with a lease).

Each POST carries the event JSON and the headers::

    Billing-Webhook-Id: <dedupe id>          # the same on every retry: dedupe on it
    Billing-Webhook-Timestamp: <unix seconds>
    Billing-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

A 2xx response marks the row delivered; anything else (or a network error) reschedules it
after ``base_delay * 2**(attempts-1)`` seconds (capped at ``max_delay``) until
``max_attempts``, then the row is ``dead``. Receivers check the signature with
``verify_signature``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from typing import Any

from billing.alerts.outbox import Outbox

log = logging.getLogger("billing.webhooks")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str, *, now: float | None = None,
                     tolerance: float = 300.0) -> bool:
    """True if ``header`` (``t=..,v1=..``) signs ``body`` with ``secret`` within ``tolerance`` s."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        expected = sign(secret, timestamp, body)
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(expected, parts.get("v1", ""))


class WebhookDispatcher:
    def __init__(self, outbox: Outbox, url: str, secret: str, *, client: Any = None, timeout: float = 10.0,
                 max_attempts: int = 12, base_delay: float = 5.0, max_delay: float = 3600.0):
        import httpx

        self.outbox = outbox
        self.url = url
        self.secret = secret
        self.client = client or httpx.Client(timeout=timeout)
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay

    def backoff(self, attempts: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))

    def run_once(self, limit: int = 100) -> dict[str, int]:
        """Deliver every due row once; returns counts of delivered / retried / dead."""
        counts = {"delivered": 0, "retried": 0, "dead": 0}
        for row in self.outbox.claim_due(limit):
            body = row["payload"].encode()
            ts = int(self.outbox.clock().timestamp())
            headers = {"Content-Type": "application/json", "Billing-Webhook-Id": row["dedupe_id"],
                       "Billing-Webhook-Timestamp": str(ts),
                       "Billing-Signature": f"t={ts},v1={sign(self.secret, ts, body)}"}
            try:
                response = self.client.post(self.url, content=body, headers=headers)
                ok, error = 200 <= response.status_code < 300, f"HTTP {response.status_code}"
            except Exception as exc:  # noqa: BLE001 - any transport problem is a retry
                ok, error = False, f"{type(exc).__name__}: {exc}"
            if ok:
                self.outbox.delivered(row["id"])
                counts["delivered"] += 1
                continue
            attempts = row["attempts"] + 1
            if attempts >= self.max_attempts:
                self.outbox.failed(row["id"], error, None)
                counts["dead"] += 1
                log.warning("webhook %s dead after %d attempts: %s", row["dedupe_id"], attempts, error)
            else:
                self.outbox.failed(row["id"], error, self.backoff(attempts))
                counts["retried"] += 1
        return counts

    def run_forever(self, stop: threading.Event, interval: float = 1.0) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - keep the loop alive (database blips)
                log.exception("webhook dispatch failed")
            stop.wait(interval)
