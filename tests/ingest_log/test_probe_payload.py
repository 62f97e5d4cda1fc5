"""Messages at the server's size limit. NATS's ``max_payload`` bounds a message's headers
and body together, and a message past it makes the server reset the connection:

- a body that is not a batch of events and is just under ``max_payload`` cannot be
  republished to the dead-letter subject with its ``Billing-Dead-*`` headers as it is; the
  worker kept retrying it (the connection reset each time) and the good message fetched
  with it was never recorded. Its dead letter now keeps the body's start, with the
  original length in ``Billing-Dead-Truncated`` (the whole stays at its sequence);
- an event that fits ``max_payload`` but not beside JetStream's ``Nats-Expected-Stream``
  header was sent, the connection reset and the caller told ``service_unavailable``
  (sending it again never worked): it is now ``event_too_large`` before anything is sent."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from billing.errors import BillingError
from billing.ingest_log.log import DEAD_TRUNCATED, dead_subject, ensure_stream, events_subject
from billing.ingest_log.publisher import EventLogPublisher, connect
from billing.ingest_log.worker import IngestWorker
from billing.ledger.ingest import Ledger
from tests.support.db import stored_events
from tests.support.event_log import consumer_state, stream_messages
from tests.support.ledger import CATALOG, _event, _setup

HANG_GUARD_S = 120  # a worker stuck on the message fails the test instead of hanging it


def _publish_raw(url: str, stream: str, bodies: list[bytes]) -> None:
    async def publish() -> None:
        nc, js = await connect(url, name="test")
        await ensure_stream(js, stream)
        for body in bodies:
            await js.publish(events_subject(stream), body)  # no header: the body may take all of max_payload
        await nc.close()

    asyncio.run(publish())


def test_a_dead_letter_as_large_as_max_payload_is_moved_and_never_blocks(engine, nats_stream):
    url, stream = nats_stream
    _setup(engine)

    async def max_payload() -> int:
        nc, _ = await connect(url, name="test")
        limit = nc.max_payload
        await nc.close()
        return limit

    junk = b"x" * (asyncio.run(max_payload()) - 16)
    _publish_raw(url, stream, [junk, orjson.dumps([_event("acme", "g1", 1)])])
    worker = IngestWorker(Ledger(engine, CATALOG, alerts=False), url, stream, batch=5, ack_wait=2, fetch_timeout=0.3)

    async def drain():
        return await asyncio.wait_for(worker.run(asyncio.Event(), until_drained=True), HANG_GUARD_S)

    totals = asyncio.run(drain())
    assert (totals.dead_letters, totals.accepted, totals.messages) == (1, 1, 1)
    (data, headers), = stream_messages(url, stream, dead_subject(stream))
    assert headers[DEAD_TRUNCATED] == str(len(junk)) and junk.startswith(data) and 0 < len(data) < len(junk)
    assert consumer_state(url, stream) == (0, 0)
    assert {e[1] for e in stored_events(engine)} == {"g1"}


def test_an_event_that_fits_max_payload_only_without_headers_is_too_large(nats_stream):
    url, stream = nats_stream
    publisher = EventLogPublisher(url, stream, timeout=5)
    try:
        limit = publisher.publish([_event("acme", "small", 1)]) and publisher._nc.max_payload
        event = _event("acme", "big", 2)
        event["properties"]["note"] = ""
        event["properties"]["note"] = "y" * (limit - 2 - len(orjson.dumps(event)) - 8)  # 8 bytes below the limit
        with pytest.raises(BillingError) as caught:
            publisher.publish([event])
        assert caught.value.code == "event_too_large"
        assert publisher.publish([_event("acme", "after", 3)]).messages == 1  # the connection is intact
    finally:
        publisher.close()
