"""Standard Webhooks signatures (https://www.standardwebhooks.com, "Signature scheme").

Every delivery carries three headers::

    webhook-id: <message id>            # the same on every retry and every endpoint: dedupe on it
    webhook-timestamp: <unix seconds>   # when this attempt was signed
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>

The key is the endpoint secret ``whsec_<base64 of 32 random bytes>`` with its prefix taken off
and the rest base64-decoded. A secret without the prefix (the older ``BILLING_WEBHOOK_SECRET``
of any text) signs with its UTF-8 bytes. ``webhook-signature`` may hold several
space-separated signatures (secret rotation); a receiver accepts the message when one ``v1``
signature matches and the timestamp is within its tolerance (5 minutes by default).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

PREFIX = "whsec_"
SECRET_BYTES = 32
TOLERANCE_SECONDS = 300


def new_secret() -> str:
    """A fresh endpoint secret, ``whsec_`` + base64 of 32 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of ``secret``: base64-decoded after ``whsec_``; raw UTF-8 bytes otherwise."""
    if secret.startswith(PREFIX):
        try:
            return base64.b64decode(secret[len(PREFIX):] + "==", validate=False)
        except (binascii.Error, ValueError):
            raise ValueError("the webhook secret after 'whsec_' is not base64") from None
    if not secret:
        raise ValueError("the webhook secret is empty")
    return secret.encode()


def valid_secret(secret: str) -> bool:
    """Whether ``secret`` is ``whsec_`` + base64 of 24 to 64 bytes (the spec's range)."""
    if not secret.startswith(PREFIX):
        return False
    try:
        key = base64.b64decode(secret[len(PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        return False
    return 24 <= len(key) <= 64


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>`` of ``id.timestamp.body``."""
    digest = hmac.new(secret_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body)}


def verify(secret: str, body: bytes, received: Mapping[str, str], *, now: float | None = None,
           tolerance: float = TOLERANCE_SECONDS) -> bool:
    """True if ``received`` (headers, any case) sign ``body`` with ``secret``, within
    ``tolerance`` seconds of ``now``: what a receiver does."""
    lower = {k.lower(): v for k, v in received.items()}
    msg_id, stamp, signatures = (lower.get("webhook-id"), lower.get("webhook-timestamp"),
                                 lower.get("webhook-signature"))
    if not (msg_id and stamp and signatures):
        return False
    try:
        timestamp = int(stamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, msg_id, timestamp, body).split(",", 1)[1]
    for item in signatures.split(" "):
        version, _, value = item.partition(",")
        if version == "v1" and hmac.compare_digest(expected.encode(), value.encode()):
            return True
    return False
