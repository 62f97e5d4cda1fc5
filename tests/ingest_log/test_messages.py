"""Messages on the log: a batch split into messages within the size and count limits, in
order, read back to the same events; an event too large for a message refused before any
message is built; what is not an event list named as a dead letter with its reason."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.errors import BillingError, ErrorCode
from billing.ingest_log.messages import decode, encode_batches

EVENT = st.fixed_dictionaries({"id": st.text(max_size=20), "customer": st.text(max_size=10),
                               "properties": st.dictionaries(st.text(max_size=5), st.integers(), max_size=4)})


@given(events=st.lists(EVENT, max_size=60), max_bytes=st.integers(700, 3000), max_events=st.integers(1, 9))
def test_messages_carry_the_batch_in_order_within_the_limits(events, max_bytes, max_events):
    messages = encode_batches(events, max_bytes, max_events)
    assert all(len(m) <= max_bytes for m in messages)
    decoded = [decode(m) for m in messages]
    assert all(d.reason is None and 1 <= len(d.events) <= max_events for d in decoded)
    assert [e for d in decoded for e in d.events] == events


def test_values_orjson_refuses_travel_as_sent():
    events = [{"id": "big", "properties": {"n": 2**70}}, {"id": "nan", "properties": {"x": float("nan")}},
              {"id": "inf", "properties": {"x": float("-inf"), "y": None}}, {"id": "\ud800"}]
    (message,) = encode_batches(events, 10_000)
    back = decode(message).events
    assert back[0] == events[0] and json.dumps(back[1:]) == json.dumps(events[1:])  # NaN never becomes null


def test_an_event_too_large_for_a_message_is_refused_whole():
    events = [{"id": "a"}, {"id": "b", "properties": {"blob": "x" * 5000}}]
    with pytest.raises(BillingError) as caught:
        encode_batches(events, 4096)
    assert caught.value.code == ErrorCode.EVENT_TOO_LARGE and "event 1" in caught.value.message


@pytest.mark.parametrize("body, reason", [
    (b"", "not valid JSON"),
    (b"\xff[]", "not valid UTF-8"),
    (b'"events"', "not an event list: a JSON string"),
    (b"null", "not an event list: a JSON null"),
    (b'{"events": [], "more": 1}', "not an event list: an object must have exactly one key"),
    (b'{"events": {}}', "not an event list: a JSON object"),
])
def test_what_is_not_an_event_list_is_a_dead_letter(body, reason):
    decoded = decode(body)
    assert decoded.events is None and decoded.reason.startswith(reason)


def test_both_bodies_of_post_events_are_event_lists():
    events = [{"id": "a"}, 3, "not an event"]  # what is inside is the ledger's to judge
    assert decode(orjson.dumps(events)).events == events
    assert decode(orjson.dumps({"events": events})).events == events
