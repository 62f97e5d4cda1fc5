"""The ingest worker: events published to the log end in the ledger exactly as a direct
import puts them there (events, counters, agent task usage), a message redelivered after a
worker died before acknowledging is counted once, and a message that is not a batch of
events is moved to the dead-letter subject and never blocks the stream."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from billing.ingest_log.log import DEAD_REASON, DEAD_SEQUENCE, dead_subject, events_subject
from billing.ingest_log.publisher import EventLogPublisher, connect
from billing.ingest_log.worker import IngestWorker
from billing.ledger.ingest import Ledger
from tests.support.db import counter_rows, engine_for_url, sqlite_database, stored_events, task_usage_rows
from tests.support.event_log import consumer_state, stream_messages
from tests.support.ledger import CATALOG, _event, _setup


def _events(n: int) -> list[dict]:
    events = [_event("acme" if i % 3 else "beta", f"e{i}", i, task=f"t{i % 7}") for i in range(n)]
    events.append(_event("acme", "e1", 1, task="t1"))  # a duplicate inside the log
    events.append({**_event("acme", "e2", 99), "id": "e2"})  # same id, other content: a conflict
    events.append({"id": "bad", "customer": "acme", "type": "llm.call"})  # no timestamp: rejected
    events.append(_event("nobody", "x1", 1))  # unknown customer: rejected
    return events


def _ledger_state(engine) -> tuple:
    events = sorted(e[:7] for e in stored_events(engine))  # without the row id (arrival order differs)
    return events, counter_rows(engine), task_usage_rows(engine)


def _drain(worker: IngestWorker):
    return asyncio.run(worker.run(asyncio.Event(), until_drained=True))


def _direct_import(tmp_path, events) -> tuple:
    with sqlite_database(tmp_path) as url, engine_for_url(url) as engine:
        _setup(engine)
        Ledger(engine, CATALOG, alerts=False).record(events)
        return _ledger_state(engine)


def test_published_events_equal_a_direct_import(engine, nats_stream, tmp_path):
    url, stream = nats_stream
    _setup(engine)
    events = _events(2500)
    publisher = EventLogPublisher(url, stream, max_events=400)
    try:
        first = publisher.publish(events[:1200])
        second = publisher.publish(events[1200:])
    finally:
        publisher.close()
    assert (first.events, first.messages) == (1200, 3) and second.events == len(events) - 1200
    assert second.first_sequence == first.last_sequence + 1

    totals = _drain(IngestWorker(Ledger(engine, CATALOG, alerts=False), url, stream, batch=3, fetch_timeout=0.3))
    assert (totals.events, totals.accepted, totals.duplicates) == (len(events), 2500, 1)
    assert (totals.conflicts, totals.rejected, totals.dead_letters) == (1, 2, 0)
    assert consumer_state(url, stream) == (0, 0)
    assert _ledger_state(engine) == _direct_import(tmp_path, events)
    assert len(stored_events(engine)) == 2500


@pytest.mark.slow  # waits out an ack_wait of 1 s
def test_a_message_redelivered_after_a_worker_died_before_its_ack_is_counted_once(engine, nats_stream, tmp_path):
    url, stream = nats_stream
    _setup(engine)
    events = _events(300)
    ledger = Ledger(engine, CATALOG, alerts=False)

    async def die_before_ack() -> int:  # fetch and commit, then lose the connection unacknowledged
        worker = IngestWorker(ledger, url, stream, batch=10, ack_wait=1)
        await worker.start()
        publisher_nc, js = await connect(url, name="test")
        await js.publish(events_subject(stream), orjson.dumps(events), stream=stream)
        await publisher_nc.close()
        messages = await worker.fetch()
        recorded, result = await worker.record(messages)
        await worker._nc.close()  # no acknowledgement was sent
        return result.accepted

    assert asyncio.run(die_before_ack()) == 300
    totals = _drain(IngestWorker(ledger, url, stream, batch=10, ack_wait=1, fetch_timeout=2))
    assert totals.messages == 1 and totals.accepted == 0 and totals.duplicates == 301
    assert _ledger_state(engine) == _direct_import(tmp_path, events)


def test_a_message_that_is_not_an_event_list_is_a_dead_letter(engine, nats_stream):
    url, stream = nats_stream
    _setup(engine)
    good = [_event("acme", "g1", 1), _event("acme", "g2", 2)]
    bodies = [b"{not json", b'{"event": []}', b"42", orjson.dumps(good[:1]), b"", orjson.dumps({"events": good[1:]})]

    async def publish() -> None:
        nc, js = await connect(url, name="test")
        from billing.ingest_log.log import ensure_stream
        await ensure_stream(js, stream)
        for body in bodies:
            await js.publish(events_subject(stream), body, stream=stream)
        await nc.close()

    asyncio.run(publish())
    totals = _drain(IngestWorker(Ledger(engine, CATALOG, alerts=False), url, stream, batch=2, fetch_timeout=0.3))
    assert (totals.dead_letters, totals.accepted, totals.messages) == (4, 2, 2)
    dead = stream_messages(url, stream, dead_subject(stream))
    assert [data for data, _ in dead] == [b"{not json", b'{"event": []}', b"42", b""]
    reasons = [headers[DEAD_REASON] for _, headers in dead]
    assert reasons[0].startswith("not valid JSON") and reasons[3].startswith("not valid JSON")
    assert "exactly one key" in reasons[1] and reasons[2] == "not an event list: a JSON number"
    assert [headers[DEAD_SEQUENCE] for _, headers in dead] == ["1", "2", "3", "5"]
    assert consumer_state(url, stream) == (0, 0)  # acknowledged: nothing blocks the stream
    assert {e[1] for e in stored_events(engine)} == {"g1", "g2"}
