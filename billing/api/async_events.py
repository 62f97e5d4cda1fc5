"""``POST /v1/events`` with ``Prefer: respond-async`` (RFC 7240): the batch is published to
the durable log (``billing.ingest_log``) instead of written, for bursts beyond the
database's write rate. The answer, 202, comes once JetStream has persisted every message of
the batch: it means durably queued, not accepted. Each event is validated later, by the
ingest worker's ``Ledger.record`` (a rejected event is logged by the worker); only the
body's shape (JSON, a list of events, at most 10,000) and the key's customer are checked
here. Without ``BILLING_NATS_URL`` the request is refused: 503 ``event_log_not_configured``.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from billing.errors import BillingError, ErrorCode

_lock = threading.Lock()


def prefers_async(request: Request) -> bool:
    """Does a ``Prefer`` header of the request ask for ``respond-async``?"""
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            if preference.split(";")[0].split("=")[0].strip().lower() == "respond-async":
                return True
    return False


def queue_events(request: Request, events: list[Any]) -> Response:
    """Publish ``events`` to the log; 202 with what was queued (the stream, the events, the
    messages and their stream sequences) once it is persisted."""
    publisher = event_log(request.app)
    published = publisher.publish(events)
    body = {"status": "queued", "stream": publisher.stream, **published.to_json()}
    return Response(orjson.dumps(body), status_code=202, media_type="application/json",
                    headers={"Preference-Applied": "respond-async"})


def event_log(app: Any):
    """The app's publisher (``BILLING_NATS_URL``, ``BILLING_NATS_STREAM``), connected on first use."""
    publisher = getattr(app.state, "event_log", None)
    if publisher is not None:
        return publisher
    from billing.config import get_settings
    from billing.ingest_log.publisher import EventLogPublisher

    settings = get_settings()
    if not settings.nats_url:
        raise BillingError("Prefer: respond-async needs the durable log: set BILLING_NATS_URL (and "
                           "BILLING_NATS_STREAM) on the server, or send the batch without it",
                           code=ErrorCode.EVENT_LOG_NOT_CONFIGURED)
    with _lock:
        if getattr(app.state, "event_log", None) is None:
            app.state.event_log = EventLogPublisher(settings.nats_url, settings.nats_stream)
    return app.state.event_log


def close_event_log(app: Any) -> None:
    """Close the app's publisher, if it made one (at shutdown)."""
    publisher = getattr(app.state, "event_log", None)
    if publisher is not None:
        app.state.event_log = None
        publisher.close()
