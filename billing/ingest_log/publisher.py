"""Publishing batches of events to the log.

``publish_events(js, stream, events, max_bytes)`` (async) splits the batch into messages
(``messages.encode_batches``) and publishes each to ``<stream>.events``, waiting for
JetStream's acknowledgement of every one: when it returns, the whole batch is persisted in
the stream. ``EventLogPublisher`` is the same for synchronous callers (the API's route
handlers, tests, benchmarks): one connection, kept on its own event-loop thread.

A failure part way leaves the messages before it in the stream; sending the batch again is
safe (the ledger counts an event id once).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple

from billing.errors import BillingError, ErrorCode
from billing.ingest_log.log import body_limit, check_stream_name, ensure_stream, events_subject
from billing.ingest_log.messages import MAX_EVENTS_PER_MESSAGE, encode_batches


class Published(NamedTuple):
    events: int
    messages: int
    first_sequence: int | None  # the stream sequences of the first and last message
    last_sequence: int | None

    def to_json(self) -> dict[str, Any]:
        return {"events": self.events, "messages": self.messages, "first_sequence": self.first_sequence,
                "last_sequence": self.last_sequence}


async def publish_events(js, stream: str, events: Sequence[Any], max_bytes: int, *,
                         max_events: int = MAX_EVENTS_PER_MESSAGE, timeout: float = 10.0) -> Published:
    """Publish ``events`` as messages on ``<stream>.events``; returns once the stream has
    acknowledged (persisted) every message. Up to 64 publishes are in flight at once.
    ``max_bytes``: the server's ``max_payload`` (each body stays ``HEADERS_ROOM`` below it,
    for the headers)."""
    payloads = encode_batches(events, body_limit(max_bytes), max_events)
    subject = events_subject(stream)
    acks: list[Any] = []
    for start in range(0, len(payloads), 64):
        acks += await asyncio.gather(*(js.publish(subject, p, timeout=timeout, stream=stream)
                                       for p in payloads[start:start + 64]))
    seqs = [a.seq for a in acks]
    return Published(len(events), len(payloads), min(seqs, default=None), max(seqs, default=None))


async def connect(url: str, *, name: str, connect_timeout: float = 5.0, attempts: int = 3):
    """A NATS connection and its JetStream context. ``attempts``: tries, a second apart, to
    connect and, once connected, to reconnect after a loss (then the connection closes).
    A server that cannot be reached is ``service_unavailable``."""
    import logging

    import nats

    log = logging.getLogger("billing.ingest_log")

    async def error(exc: Exception) -> None:  # one line, not the client's traceback per attempt
        log.warning("NATS %s: %s: %s", url, type(exc).__name__, exc)

    try:
        nc = await nats.connect(url, name=name, connect_timeout=connect_timeout, allow_reconnect=True,
                                max_reconnect_attempts=attempts, reconnect_time_wait=1.0, error_cb=error)
    except Exception as exc:
        raise BillingError(f"cannot reach NATS at {url}: {type(exc).__name__}: {exc}",
                           code=ErrorCode.UNAVAILABLE) from None
    return nc, nc.jetstream()


class EventLogPublisher:
    """A synchronous publisher to one stream (thread-safe; connects on first use)."""

    def __init__(self, url: str, stream: str, *, timeout: float = 10.0,
                 max_events: int = MAX_EVENTS_PER_MESSAGE) -> None:
        self.url, self.stream = url, check_stream_name(stream)
        self.timeout, self.max_events = timeout, max_events
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._nc = self._js = None

    def publish(self, events: Sequence[Any]) -> Published:
        """Publish ``events``; returns once every message is persisted in the stream.
        ``service_unavailable`` when NATS cannot be reached or does not acknowledge in time."""
        return self._run(self._publish(list(events)))

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return
        if self._nc is not None:
            asyncio.run_coroutine_threadsafe(self._nc.close(), loop).result(self.timeout)
        self._nc = self._js = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self.timeout)
        loop.close()

    def _run(self, coroutine):
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="billing-event-log", daemon=True)
                self._thread.start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    async def _publish(self, events: list[Any]) -> Published:
        if self._nc is None or self._nc.is_closed:
            self._nc, self._js = await connect(self.url, name="billing-publisher", connect_timeout=self.timeout)
            await ensure_stream(self._js, self.stream)
        try:
            return await publish_events(self._js, self.stream, events, self._nc.max_payload,
                                        max_events=self.max_events, timeout=self.timeout)
        except BillingError:
            raise
        except Exception as exc:  # timeout, no responders, connection lost: not (all) persisted
            raise BillingError(f"the event log did not persist the batch ({type(exc).__name__}: {exc}); "
                               "part of it may be queued: sending it again is safe (event ids are idempotent)",
                               code=ErrorCode.UNAVAILABLE) from None
