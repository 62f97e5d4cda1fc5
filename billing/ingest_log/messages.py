"""The messages on the log: one message holds a batch of events.

A message's body is a JSON array of events, or an object ``{"events": [...]}`` (the two
bodies ``POST /v1/events`` takes). One message per batch, not per event: the log then
carries bursts at the rate of a few hundred messages a second, and a worker hands thousands
of events to the ledger in one call. The granularity of dead letters follows: a message
that is not JSON or not an event list is a dead letter whole; an event inside a good
message that the ledger rejects is a normal ledger result (``rejected`` with its code), not
a dead letter.

``encode_batches`` splits a batch into messages of at most ``max_bytes`` (the server's
``max_payload``) and ``max_events`` each; ``decode`` reads one back, or says why it cannot.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import orjson

from billing.errors import BillingError, ErrorCode
from billing.ledger.jsonl import parse_line

MAX_EVENTS_PER_MESSAGE = 1000


def encode_event(event: Any) -> bytes:
    """One event as JSON (orjson; the standard encoder for what orjson refuses, integers
    past 64 bits, and for what it would change, NaN and infinities, which it writes as
    null: the ledger rejects those by its own rules, so they travel as sent)."""
    try:
        raw = orjson.dumps(event)
        if b"null" not in raw:  # (None, or a non-finite float: read again below)
            return raw
    except (orjson.JSONEncodeError, TypeError):
        pass
    try:
        return json.dumps(event, allow_nan=True, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise BillingError(f"an event cannot be written as JSON: {exc}", code=ErrorCode.EVENT_INVALID) from None


def encode_batches(events: Sequence[Any], max_bytes: int,
                   max_events: int = MAX_EVENTS_PER_MESSAGE) -> list[bytes]:
    """The messages (JSON arrays) that carry ``events`` in order, each at most ``max_bytes``
    long and ``max_events`` events. An event too large for a message on its own is refused
    (``event_too_large``) before any message is built, so nothing of the batch is sent."""
    encoded = [encode_event(e) for e in events]
    for i, raw in enumerate(encoded):
        if len(raw) + 2 > max_bytes:
            raise BillingError(f"event {i} is {len(raw):,} bytes as JSON; a message on the log holds at most "
                               f"{max_bytes - 2:,}", code=ErrorCode.EVENT_TOO_LARGE)
    return list(_pack(encoded, max_bytes, max_events))


def _pack(encoded: list[bytes], max_bytes: int, max_events: int) -> Iterator[bytes]:
    parts: list[bytes] = []
    size = 2  # the brackets
    for raw in encoded:
        extra = len(raw) + (1 if parts else 0)
        if parts and (size + extra > max_bytes or len(parts) >= max_events):
            yield b"[" + b",".join(parts) + b"]"
            parts, size, extra = [], 2, len(raw)
        parts.append(raw)
        size += extra
    if parts:
        yield b"[" + b",".join(parts) + b"]"


class Decoded(NamedTuple):
    events: list[Any] | None  # the batch, or None for a dead letter
    reason: str | None  # why the message is a dead letter


def decode(data: bytes) -> Decoded:
    """A message's events, or (None, the reason it is a dead letter): not JSON, or JSON
    that is neither an array nor an object whose ``events`` is an array. The events
    themselves are not checked here: that is the ledger's job, one result per event."""
    if _LONG_NUMBER.search(data):  # orjson would read an integer past 64 bits as a float
        value, problem = _parse_exact(data)
    else:
        value, problem = parse_line(data)
    if problem is not None:
        return Decoded(None, problem)
    if isinstance(value, dict):
        if set(value) != {"events"}:
            return Decoded(None, "not an event list: an object must have exactly one key, \"events\"")
        value = value["events"]
    if not isinstance(value, list):
        return Decoded(None, f"not an event list: a JSON {_kind(value)}")
    return Decoded(value, None)


_LONG_NUMBER = re.compile(rb"\d{19,}")


def _parse_exact(data: bytes) -> tuple[Any, str | None]:
    """The standard parser (integers of any length exact), with ``parse_line``'s reasons."""
    try:
        return json.loads(data.decode("utf-8")), None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, parse_line(data)[1] or "not valid JSON"


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
