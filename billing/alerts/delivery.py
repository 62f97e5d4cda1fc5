"""Outgoing webhooks: each pass fans the outbox's new events out to the endpoints
(``billing.alerts.deliveries.fan_out``), then POSTs every due delivery, signed per Standard
Webhooks (``billing.alerts.signing``), at least once, retried with exponential backoff, each
attempt logged. ``billing worker`` runs ``WebhookDispatcher.run_once`` as its ``outbox`` job;
``billing serve`` can run ``run_forever`` in a thread (both at once are safe: deliveries are
claimed with a lease).

Each POST carries the event JSON (``{"id", "type", "timestamp", "customer", "data"}``) and
``webhook-id`` (the event id, the same on every retry and endpoint: dedupe on it),
``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256>``. The implicit
endpoint ``env`` (``BILLING_WEBHOOK_URL`` / ``BILLING_WEBHOOK_SECRET``) receives every event
type and, for receivers written before, also the older ``Billing-Webhook-Id`` and
``Billing-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.

A 2xx response marks the delivery delivered; anything else (or a network error) reschedules
it after ``base_delay * 2**(attempts-1)`` seconds (capped at ``max_delay``) until
``max_attempts``, then it is ``dead`` (``billing webhooks replay`` sends it again). A
delivery whose endpoint was disabled or deleted meanwhile is ``canceled``.

Unless private targets are allowed, each POST to a managed endpoint resolves its host again,
refuses it (a failed attempt, nothing sent) when an address is not public, and goes to the
checked address (``billing.alerts.targets.pin``: DNS rebinding cannot redirect it).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from typing import Any

from billing.alerts import deliveries, targets
from billing.alerts.endpoints import Endpoints, allow_private_targets
from billing.alerts.outbox import Outbox
from billing.alerts.signing import headers as standard_headers
from billing.errors import BillingError
from billing.store.types import to_us

log = logging.getLogger("billing.webhooks")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The older ``Billing-Signature`` scheme's hex HMAC (the ``env`` endpoint only)."""
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
    """Delivers the outbox to every endpoint of the ``webhook_endpoint`` table, and to
    ``url`` (the implicit ``env`` endpoint) when given."""

    def __init__(self, outbox: Outbox, url: str | None = None, secret: str | None = None, *, client: Any = None,
                 timeout: float = 10.0, max_attempts: int = 12, base_delay: float = 5.0, max_delay: float = 3600.0,
                 lease_seconds: float = 60.0, allow_private: bool | None = None):
        import httpx

        self.outbox = outbox
        self.url = url
        self.secret = secret
        self.env = bool(url and secret)
        self.client = client or httpx.Client(timeout=timeout)
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.lease_seconds = lease_seconds
        # managed endpoints may reach private addresses (default: BILLING_WEBHOOK_ALLOW_PRIVATE_TARGETS)
        self.allow_private = allow_private
        # a batch is claimed for at most what its slow sends can take within the lease
        self.claim_size = max(1, int(lease_seconds // (timeout + 1)))
        self.private_ok = False  # this pass's reading of allow_private

    def backoff(self, attempts: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))

    def run_once(self, limit: int = 100) -> dict[str, int]:
        """Fan out new events, then deliver up to ``limit`` due deliveries once; returns the
        counts of events fanned out and of deliveries delivered / retried / dead / canceled."""
        engine, clock = self.outbox.engine, self.outbox.clock
        counts = {"events": deliveries.fan_out(engine, to_us(clock()), env=self.env),
                  "delivered": 0, "retried": 0, "dead": 0, "canceled": 0}
        endpoints = {e["id"]: e for e in Endpoints(engine).enabled()}
        self.private_ok = allow_private_targets() if self.allow_private is None else self.allow_private
        if self.env:
            endpoints[deliveries.ENV] = {"id": deliveries.ENV, "url": self.url, "secret": self.secret}
        done = 0
        while done < limit:
            now_us = to_us(clock())
            batch = deliveries.claim(engine, now_us, now_us + int(self.lease_seconds * 1_000_000),
                                     min(self.claim_size, limit - done), env=self.env)
            if not batch:
                break
            for row in batch:
                counts[self._send(row, endpoints.get(row["endpoint_id"]))] += 1
            done += len(batch)
        return counts

    def _send(self, row: dict[str, Any], endpoint: dict[str, Any] | None) -> str:
        engine, clock = self.outbox.engine, self.outbox.clock
        if endpoint is None:
            deliveries.finish(engine, row, at_us=to_us(clock()), ok=False, status_code=None,
                              error="endpoint disabled or deleted", took_ms=0, retry_at_us=None,
                              final_status="canceled")
            return "canceled"
        body = row["payload"].encode()
        ts = int(clock().timestamp())
        sent = {"Content-Type": "application/json", "User-Agent": "billing-webhooks/1",
                **standard_headers(endpoint["secret"], row["dedupe_id"], ts, body)}
        if endpoint["id"] == deliveries.ENV:
            sent.update({"Billing-Webhook-Id": row["dedupe_id"], "Billing-Webhook-Timestamp": str(ts),
                         "Billing-Signature": f"t={ts},v1={sign(endpoint['secret'], ts, body)}"})
        started = time.monotonic()
        status_code = None
        url, extensions = endpoint["url"], {}
        try:
            if endpoint["id"] != deliveries.ENV and not self.private_ok:
                url, host, extensions = targets.pin(url)  # (refused: a failed attempt, nothing sent)
                sent.update(host)
            # the answer's body is never read (a receiver cannot make the dispatcher hold megabytes)
            with self.client.stream("POST", url, content=body, headers=sent, extensions=extensions) as response:
                status_code = response.status_code
            ok, error = 200 <= status_code < 300, f"HTTP {status_code}"
        except BillingError as exc:  # webhook_target_forbidden: retried (DNS may change back), never sent
            ok, error = False, f"{exc.code}: {exc.message}"
        except Exception as exc:  # noqa: BLE001 - any transport problem is a retry
            ok, error = False, f"{type(exc).__name__}: {exc}"
        took_ms = round((time.monotonic() - started) * 1000)
        at = clock()
        attempts = row["attempts"] + 1
        if ok:
            outcome, retry_at = "delivered", None
        elif attempts >= self.max_attempts:
            outcome, retry_at = "dead", None
            log.warning("webhook %s to %s dead after %d attempts: %s", row["dedupe_id"], endpoint["id"], attempts,
                        error)
        else:
            outcome, retry_at = "retried", to_us(at) + int(self.backoff(attempts) * 1_000_000)
        deliveries.finish(engine, row, at_us=to_us(at), ok=ok, status_code=status_code, error=error,
                          took_ms=took_ms, retry_at_us=retry_at)
        return outcome

    def run_forever(self, stop: threading.Event, interval: float = 1.0) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - keep the loop alive (database blips)
                log.exception("webhook dispatch failed")
            stop.wait(interval)
