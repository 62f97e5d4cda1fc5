"""CloudEvents on ``POST /v1/events``: the pure mapping (``billing.api.formats.cloudevents``)
and the HTTP door on SQLite and PostgreSQL (``any_engine``): structured mode, the batch
content type, refusals naming the attribute, neighbours kept, replays idempotent."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from billing.api.formats import Refused
from billing.api.formats.cloudevents import BATCH, STRUCTURED, media_type, to_event, to_events
from billing.errors import ErrorCode
from tests.support.formats import formats_api
from tests.support.quota import NOW

STAMP = NOW.isoformat().replace("+00:00", "Z")


def ce(**over) -> dict:
    base = {"specversion": "1.0", "id": "evt-1", "source": "billing", "type": "llm.call", "time": STAMP,
            "subject": "acme", "datacontenttype": "application/json",
            "data": {"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 80}}
    return {k: v for k, v in {**base, **over}.items() if v is not None}


def test_the_mapping_of_the_attributes():
    assert to_event(ce()) == {"id": "evt-1", "customer": "acme", "type": "llm.call", "timestamp": STAMP,
                              "properties": {"model": "gpt-4o", "input_tokens": 1200, "output_tokens": 80}}
    # ids are unique per source: another source's id is prefixed with it, deterministically
    assert to_event(ce(source="/apps/chat"))["id"] == "/apps/chat#evt-1"
    assert to_event(ce(source="/apps/chat"), own_source="/apps/chat")["id"] == "evt-1"
    assert to_event(ce(data=None))["properties"] == {}
    assert to_event(ce(subject=None, tenant="globex"), customer_attribute="tenant")["customer"] == "globex"


@pytest.mark.parametrize("change, code, field", [
    ({"id": None}, ErrorCode.EVENT_INVALID, "id"),
    ({"id": ""}, ErrorCode.EVENT_INVALID, "id"),
    ({"source": None}, ErrorCode.EVENT_INVALID, "source"),
    ({"type": None}, ErrorCode.EVENT_INVALID, "type"),
    ({"specversion": "0.3"}, ErrorCode.EVENT_INVALID, "specversion"),
    ({"time": None}, ErrorCode.BAD_TIMESTAMP, "time"),
    ({"subject": None}, ErrorCode.EVENT_INVALID, "subject"),
    ({"data": [1, 2]}, ErrorCode.EVENT_INVALID, "data"),
    ({"datacontenttype": "text/plain"}, ErrorCode.EVENT_INVALID, "datacontenttype"),
    ({"data": None, "data_base64": "aGk="}, ErrorCode.EVENT_INVALID, "data_base64"),
])
def test_a_bad_cloudevent_is_refused_naming_the_attribute(change, code, field):
    refused = to_event(ce(**change))
    assert isinstance(refused, Refused) and refused.code == code and refused.field == field
    assert repr(field) in refused.message


def test_media_types_and_batch_shape():
    assert media_type("application/cloudevents+json; charset=utf-8") == STRUCTURED
    assert media_type("Application/CloudEvents-Batch+JSON") == BATCH
    assert media_type("application/json") is None and media_type(None) is None
    assert len(to_events([ce(), ce(id="evt-2")], BATCH)) == 2
    with pytest.raises(ValueError, match="JSON array"):
        to_events(ce(), BATCH)


@pytest.fixture
def api(any_engine):
    yield from formats_api(any_engine)


def _stored(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT customer_id, event_id, type FROM usage_event ORDER BY event_id"))]


def test_structured_mode_records_one_event_and_a_replay_is_a_duplicate(api):
    first = api("/v1/events", ce(), STRUCTURED)
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 1 and first.json()["results"][0]["id"] == "evt-1"
    again = api("/v1/events", ce(), STRUCTURED)
    assert again.json()["duplicates"] == 1 and again.json()["accepted"] == 0
    assert _stored(api.engine) == [("acme", "evt-1", "llm.call")]


def test_batch_mode_keeps_the_neighbours_of_a_bad_event(api):
    batch = [ce(id="a"), ce(id=None), ce(id="c", time=None), ce(id="d", source="/apps/chat", subject="globex"),
             ce(id="e", subject="nobody")]
    r = api("/v1/events", batch, BATCH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    results = body["results"]
    assert [x["index"] for x in results] == [0, 1, 2, 3, 4]
    assert [x["status"] for x in results] == ["accepted", "rejected", "rejected", "accepted", "rejected"]
    assert results[1]["code"] == "event_invalid" and "'id'" in results[1]["message"]
    assert results[2]["code"] == "bad_timestamp" and "'time'" in results[2]["message"]
    assert results[4]["code"] == "customer_not_found"  # the ledger's own rejection, at its position
    assert _stored(api.engine) == [("globex", "/apps/chat#d", "llm.call"), ("acme", "a", "llm.call")]


@pytest.mark.parametrize("change, code, field", [({"id": None}, "event_invalid", "id"),
                                                 ({"time": None}, "bad_timestamp", "time")])
def test_a_bad_structured_event_is_a_4xx_naming_the_field(api, change, code, field):
    r = api("/v1/events", ce(**change), STRUCTURED)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["details"] == {"field": field}
    assert _stored(api.engine) == []


def test_batch_body_that_is_not_an_array_and_a_foreign_customer(api):
    r = api("/v1/events", ce(), BATCH)
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    r = api("/v1/events", [ce(subject="globex")], BATCH, key="acme")  # a key restricted to acme
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert _stored(api.engine) == []


def test_plain_json_batches_are_served_as_before(api):
    event = {"id": "j1", "customer": "acme", "type": "request", "timestamp": STAMP, "properties": {}}
    assert api("/v1/events", {"events": [event]}).json()["accepted"] == 1
    bad = api("/v1/events", {"evnts": [event]})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    assert bad.json()["error"]["details"][0]["path"] == "EventsIn.events"  # as FastAPI's own body validation says
