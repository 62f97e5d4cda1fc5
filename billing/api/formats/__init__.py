"""Standard event formats, mapped to our event dict (``{id, customer, type, timestamp,
properties}``) by pure functions; every door then hands the events to ``Ledger.record``.

- ``cloudevents``: CloudEvents 1.0 in JSON, structured mode and batch (``POST /v1/events``);
- ``otlp``: OTLP/HTTP JSON traces whose spans carry OpenTelemetry GenAI attributes
  (``POST /v1/otlp/v1/traces``);
- ``recording``: records the mapped events and answers per position (an item the mapping
  refused is its own rejection; its neighbours are kept).
"""

from __future__ import annotations

from typing import NamedTuple

from billing.errors import ErrorCode


class Refused(NamedTuple):
    """An item a mapping could not turn into an event: a stable code, the offending field
    (as the format names it) and why."""

    code: ErrorCode
    field: str
    message: str
    id: str | None = None  # the item's id, when it had one
    customer: str | None = None
