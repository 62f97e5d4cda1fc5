"""``POST /v1/events`` with ``Prefer: respond-async``: 202 once the batch is persisted in the
durable log (nothing written to the ledger yet), recorded by the ingest worker; the body's
shape and the key's customer are checked before publishing; without BILLING_NATS_URL a
503 ``event_log_not_configured`` and nothing queued or written."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.config import get_settings
from billing.ingest_log.log import events_subject
from billing.ingest_log.worker import IngestWorker
from billing.ledger.ingest import Ledger
from tests.support.db import stored_events
from tests.support.event_log import stream_messages
from tests.support.quota import NOW, T0, Clock, catalog

CAT = catalog()
ASYNC = {"Prefer": "respond-async"}


def _event(i: int, customer: str = "acme") -> dict:
    return {"id": f"e{i}", "customer": customer, "type": "request",
            "timestamp": (NOW - timedelta(hours=1)).isoformat(), "properties": {}}


@pytest.fixture
def api(sqlite_engine):
    app = create_app(sqlite_engine, CAT, clock=Clock(), context_ttl=0, key_cache_ttl=0)
    keys = {"admin": create_key(sqlite_engine, "admin")[1], "ingest": create_key(sqlite_engine, "ingest")[1],
            "globex-ingest": create_key(sqlite_engine, "ingest", customer="globex")[1]}
    with TestClient(app) as client:
        def call(body, key: str = "ingest", headers=None, path: str = "/v1/events"):
            return client.post(path, json=body, headers={"Authorization": f"Bearer {keys[key]}", **(headers or {})})

        for cid in ("acme", "globex"):
            assert call({"id": cid}, "admin", path="/v1/customers").status_code == 201
            r = call({"plan": "blocky", "at": T0.isoformat()}, "admin", path=f"/v1/customers/{cid}/subscriptions")
            assert r.status_code == 201, r.text
        call.engine = sqlite_engine
        yield call


def test_queued_with_202_then_recorded_by_the_worker(api, nats_stream, monkeypatch):
    url, stream = nats_stream
    monkeypatch.setenv("BILLING_NATS_URL", url)
    monkeypatch.setenv("BILLING_NATS_STREAM", stream)
    get_settings.cache_clear()
    events = [_event(i, "acme" if i % 2 else "globex") for i in range(30)] + [{"id": "bad"}]
    r = api({"events": events}, headers={"Prefer": "wait=10, respond-async"})
    assert r.status_code == 202, r.text
    assert r.headers["preference-applied"] == "respond-async"
    body = r.json()
    assert body == {"status": "queued", "stream": stream, "events": 31, "messages": 1, "first_sequence": 1,
                    "last_sequence": 1}
    assert stored_events(api.engine) == []  # queued, not written
    assert api(events[:2], headers=ASYNC).json()["first_sequence"] == 2  # the bare-list body too

    totals = asyncio.run(IngestWorker(Ledger(api.engine, CAT, alerts=False), url, stream, fetch_timeout=0.3)
                         .run(asyncio.Event(), until_drained=True))
    assert (totals.accepted, totals.duplicates, totals.rejected, totals.dead_letters) == (30, 2, 1, 0)
    assert sorted(e[1] for e in stored_events(api.engine)) == sorted(f"e{i}" for i in range(30))


def test_the_body_and_the_keys_customer_are_checked_before_publishing(api, nats_stream, monkeypatch):
    url, stream = nats_stream
    monkeypatch.setenv("BILLING_NATS_URL", url)
    monkeypatch.setenv("BILLING_NATS_STREAM", stream)
    get_settings.cache_clear()
    assert api({"events": "no"}, headers=ASYNC).status_code == 422
    assert api({"events": [_event(i) for i in range(10_001)]}, headers=ASYNC).status_code == 422
    r = api({"events": [_event(1, "globex"), _event(2, "acme")]}, "globex-ingest", headers=ASYNC)
    assert r.status_code == 403
    assert api({"events": [_event(1, "globex")]}, "globex-ingest", headers=ASYNC).status_code == 202
    assert [data.count(b'"id"') for data, _ in stream_messages(url, stream, events_subject(stream))] == [1]


def test_without_the_log_configured_the_request_is_refused(api, monkeypatch):
    monkeypatch.delenv("BILLING_NATS_URL", raising=False)
    get_settings.cache_clear()
    r = api({"events": [_event(1)]}, headers=ASYNC)
    assert r.status_code == 503 and r.json()["error"]["code"] == "event_log_not_configured"
    assert "BILLING_NATS_URL" in r.json()["error"]["message"]
    assert stored_events(api.engine) == []
    r = api({"events": [_event(1)]}, headers={"Prefer": "respond-asynchronously, return=minimal"})
    assert r.status_code == 200 and r.json()["accepted"] == 1  # not the preference: written at once
