"""Commits over HTTP: a retried commit after a lost answer is a 200 with the stored result;
a late commit is flagged and counted in the usage and in ``GET /v1/quota/metrics``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from tests.support.quota import NOW, T0, Clock
from tests.support.summed import CAT


@pytest.fixture
def api(any_engine):
    clock = Clock()
    app = create_app(any_engine, CAT, clock=clock, context_ttl=0, key_cache_ttl=0)
    keys = {scope: create_key(any_engine, scope)[1] for scope in ("check", "read", "admin")}
    keys["acme-read"] = create_key(any_engine, "read", customer="acme")[1]
    with TestClient(app) as client:
        def call(method: str, path: str, key: str = "admin", **kw):
            return client.request(method, path, headers={"Authorization": f"Bearer {keys[key]}"}, **kw)

        call.clock = clock
        for cid in ("acme", "globex"):
            assert call("POST", "/v1/customers", json={"id": cid}).status_code == 201
            assert call("POST", f"/v1/customers/{cid}/subscriptions",
                        json={"plan": "summed", "at": T0.isoformat()}).status_code == 201
        yield call


def test_commit_retried_after_a_lost_answer_is_200(api):
    r = api("POST", "/v1/quota/reserve", "check", json={"customer": "acme", "meter": "units", "quantity": 5}).json()
    body = {"reservation_id": r["reservation_id"], "event": {"properties": {"units": 5}}}
    first = api("POST", "/v1/quota/commit", "check", json=body)
    assert first.status_code == 200 and first.json()["event"] == "accepted"
    api.clock.now = NOW + timedelta(seconds=20)
    again = api("POST", "/v1/quota/commit", "check", json=body)
    assert again.status_code == 200, again.text
    assert again.json() == {**first.json(), "event": "duplicate"}
    other = api("POST", "/v1/quota/commit", "check",
                json={**body, "event": {"properties": {"units": 6}}})
    assert other.status_code == 409 and other.json()["error"]["code"] == "event_conflict"
    assert api("GET", "/v1/customers/acme/usage", "check").json()["meters"]["units"]["used"] == "5"


def test_late_commit_over_http_and_the_metrics_read(api):
    reserve = {"customer": "acme", "meter": "units", "quantity": 100, "ttl_seconds": 30}
    first = api("POST", "/v1/quota/reserve", "check", json=reserve).json()
    api.clock.now = NOW + timedelta(seconds=31)
    second = api("POST", "/v1/quota/reserve", "check", json=reserve).json()
    assert first["granted"] and second["granted"]
    late = api("POST", "/v1/quota/commit", "check",
               json={"reservation_id": first["reservation_id"], "event": {"properties": {"units": 100}}}).json()
    assert late["late_commit"] is True and late["event"] == "accepted"
    on_time = api("POST", "/v1/quota/commit", "check",
                  json={"reservation_id": second["reservation_id"], "event": {"properties": {"units": 100}}}).json()
    assert on_time["late_commit"] is False
    usage = api("GET", "/v1/customers/acme/usage", "check").json()
    assert usage["meters"]["units"]["used"] == "200" and usage["late_commits"] == 1

    metrics = api("GET", "/v1/quota/metrics", "read")
    assert metrics.status_code == 200, metrics.text
    js = metrics.json()
    assert js["late_commits"] == 1 and js["until"] == "2026-10-10T12:00:31Z" and js["since"] == "2026-10-09T12:00:31Z"
    assert [(m["customer"], m["meter"], m["late_commits"], m["held_units"]) for m in js["by_meter"]] == [
        ("acme", "units", 1, "100")]
    window = api("GET", "/v1/quota/metrics", "read",
                 params={"since": "2026-10-10T12:00:32Z", "until": "2026-10-10T13:00:00Z"}).json()
    assert window["late_commits"] == 0
    assert api("GET", "/v1/quota/metrics", "read", params={"customer": "globex"}).json()["late_commits"] == 0
    assert api("GET", "/v1/quota/metrics", "acme-read").json()["late_commits"] == 1
    assert api("GET", "/v1/quota/metrics", "acme-read", params={"customer": "globex"}).status_code == 403
    assert api("GET", "/v1/quota/metrics", "check").status_code == 403
    for bad in ({"since": "2026-10-10T12:00:00"}, {"since": "2026-10-11T00:00:00Z", "until": "2026-10-10T00:00:00Z"},
                {"until": "0001-01-01T00:00:00+14:00"}, {"limit": 0}):
        r = api("GET", "/v1/quota/metrics", "read", params=bad)
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", (bad, r.text)
