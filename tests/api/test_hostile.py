"""Hostile input against every route (SQLite and PostgreSQL): lone surrogates, NUL
characters and over-long text in every string field and path parameter, huge and negative
integers, deep JSON, instants at year 1 and 9999 with +-14:00 offsets and before 1970.
Never a 5xx; always the JSON error body of ``billing.api.errors``; a bad event is its own rejection
with its reason and position, and its neighbours are stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.ledger.accounts import Accounts
from billing.api.stripe_webhook import get_webhook_secret
from tests.support.db import engine_for_url
from tests.support.errors import error_of
from tests.support.quota import catalog

CAT = catalog()
NOW = datetime.now(UTC)
STAMP = (NOW - timedelta(hours=1)).isoformat()

HOSTILE_TEXT = ["\ud800", "a\udfff", "\udc80\ud800", "\x00", "a\x00b", "\u00e9" * 5000, "x" * 100_000, ""]
HOSTILE_VALUES = [10**30, -(10**30), 2**63, -1, 1e308, True, None, [], {}, [[[[[]]]]]]
HOSTILE_INSTANTS = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1969-07-20T20:17:00Z",
                    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"]


def _event(i: int, **changes) -> dict:
    return {"id": f"e{i}", "customer": "acme", "type": "request", "timestamp": STAMP,
            "properties": {"feature": "f", "user": "u"}, **changes}


BODIES = {
    ("POST", "/v1/events"): {"events": [_event(1)]},
    ("POST", "/v1/quota/check"): {"customer": "acme", "meter": "requests", "model": "m", "task": "t"},
    ("POST", "/v1/quota/reserve"): {"customer": "acme", "meter": "requests", "request_id": "r1", "task": "t"},
    ("POST", "/v1/quota/commit"): {"reservation_id": "rsv_x", "event": _event(2)},
    ("POST", "/v1/quota/release"): {"reservation_id": "rsv_x"},
    ("POST", "/v1/customers"): {"id": "c2", "name": "n", "timezone": "UTC", "currency": "USD"},
    ("POST", "/v1/customers/acme/subscriptions"): {"plan": "blocky", "seats": 1, "at": STAMP},
    ("POST", "/v1/customers/acme/seats"): {"seats": 2, "at": STAMP},
}
PATHS = ["/v1/customers/{x}", "/v1/customers/{x}/usage", "/v1/invoices/{x}", "/v1/plans/{x}",
         "/v1/invoices?customer={x}", "/v1/invoices?limit={x}", "/v1/invoices?status={x}", "/v1/keys/{x}"]
PATH_VALUES = ["%ED%A0%80", "%00", "%FF%FE", "a" * 10_000, "9" * 30, "-1", "1e5", "%F0%9F%98%80", "%25", ".."]


def _variants(value):
    """``value`` with one leaf (or one key) made hostile at a time."""
    if isinstance(value, dict):
        for key, item in value.items():
            for changed in _variants(item):
                yield {**value, key: changed}
            for bad in HOSTILE_VALUES:
                yield {**value, key: bad}
        for bad_key in ("\ud800", "\x00", "k" * 10_000):
            yield {**value, bad_key: 1}
    elif isinstance(value, list):
        for i, item in enumerate(value):
            for changed in _variants(item):
                yield [*value[:i], changed, *value[i + 1:]]
    elif isinstance(value, str):
        yield from HOSTILE_TEXT
        if value in (STAMP,):
            yield from HOSTILE_INSTANTS


@pytest.fixture
def client(db_url):
    with engine_for_url(db_url) as engine:
        start = NOW - timedelta(days=1)
        accounts = Accounts(engine, CAT)
        accounts.create_customer("acme", now=start)
        accounts.subscribe("acme", "blocky", at=start)
        app = create_app(engine, CAT, context_ttl=0, key_cache_ttl=60)
        app.dependency_overrides[get_webhook_secret] = lambda: "whsec_hostile"
        key = create_key(engine, "admin")[1]
        with TestClient(app, raise_server_exceptions=False) as test_client:
            test_client.headers["Authorization"] = f"Bearer {key}"
            yield test_client, engine


def _assert_4xx(response, what) -> None:
    assert 400 <= response.status_code < 500 or response.status_code == 200 or response.status_code == 201, \
        (what, response.status_code, response.text[:300])
    if response.status_code >= 400:
        error_of(response.json())


def _json_text(body) -> bytes:
    # json.dumps writes a lone surrogate as the \\ud800 escape, as a client would send it
    return json.dumps(body).encode()


def test_hostile_bodies_never_answer_5xx(client):
    test_client, _engine = client
    sent = 0
    for (method, path), body in BODIES.items():
        for variant in _variants(body):
            r = test_client.request(method, path, content=_json_text(variant),
                                    headers={"content-type": "application/json"})
            _assert_4xx(r, (path, str(variant)[:120]))
            sent += 1
        for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"\xff\xfe",
                    b'"\\ud800"', b"1e999999", b"-" + b"9" * 5000, b'{"events": [' + b"{}," * 9999 + b"{}]}"):
            _assert_4xx(test_client.request(method, path, content=raw, headers={"content-type": "application/json"}),
                        (path, raw[:40]))
            sent += 1
    assert sent > 500


def test_hostile_path_and_query_parameters_never_answer_5xx(client):
    test_client, _engine = client
    for template in PATHS:
        for value in PATH_VALUES:
            for method in ("GET", "DELETE") if template.startswith("/v1/keys") else ("GET",):
                _assert_4xx(test_client.request(method, template.replace("{x}", value)), (template, value))
    for name in ("as_of", "period", "whale_margin", "by"):
        for value in [*HOSTILE_INSTANTS, *PATH_VALUES, "9999-12", "0001-01", "1e999999", "NaN"]:
            r = test_client.get("/reports/margins", params={name: value, "format": "json"})
            _assert_4xx(r, ("/reports/margins", name, value))
    for value in PATH_VALUES:
        for suffix in ("seats", "subscriptions"):
            r = test_client.post(f"/v1/customers/{value}/{suffix}", json={"seats": 1, "plan": "blocky"})
            _assert_4xx(r, (suffix, value))


def test_a_bad_event_is_its_own_rejection_with_reason_and_position(client):
    test_client, engine = client
    events = [_event(1), _event(2, timestamp="1969-07-20T20:17:00Z"),
              _event(3, timestamp="0001-01-01T00:00:00+14:00"), _event(4, timestamp="9999-12-31T23:59:59-14:00"),
              _event(5, properties={"note": "x" * 40_000}), _event(6, id="e6\ud800"),
              _event(7, customer="acme\udfff"), _event(8, properties={"user": "\ud800"}), _event(9)]
    r = test_client.post("/v1/events", content=_json_text({"events": events}),
                         headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    got = [(x["index"], x["status"], x.get("code")) for x in results]
    assert got == [(0, "accepted", None), (1, "rejected", "bad_timestamp"), (2, "rejected", "bad_timestamp"),
                   (3, "rejected", "bad_timestamp"), (4, "rejected", "event_too_large"),
                   (5, "rejected", "event_invalid"), (6, "rejected", "event_invalid"),
                   (7, "rejected", "event_invalid"), (8, "accepted", None)], got
    assert results[5]["id"] == "e6\ud800"  # echoed back exactly, as a JSON escape
    with engine.connect() as conn:
        stored = sorted(conn.exec_driver_sql("SELECT event_id FROM usage_event").scalars())
    assert stored == ["e1", "e9"]


def test_an_oversized_authenticated_body_is_refused_not_stored(client):
    """The issue's probe: an authenticated 100 MB property was stored. Over the request
    limit the batch is refused whole (413) before it is parsed; under it, an event over the
    properties limit is its own rejection."""
    test_client, engine = client
    huge = _json_text({"events": [_event(1, properties={"note": "x" * (6 * 1024 * 1024)})]})
    r = test_client.post("/v1/events", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM usage_event").scalar_one() == 0
