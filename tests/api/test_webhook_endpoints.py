"""``/v1/webhook_endpoints`` and ``/v1/webhook_deliveries``: managed over HTTP with an admin
key, bad input named (``param``), the log and replay end to end over loopback HTTP."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from billing.alerts.delivery import WebhookDispatcher
from billing.alerts.events import enqueue_event
from billing.alerts.outbox import Outbox
from billing.alerts.signing import verify
from billing.api.app import create_app
from billing.api.auth import create_key
from tests.support.quota import NOW, Clock, catalog
from tests.support.webhooks import Receiver

CAT = catalog()


@pytest.fixture
def api(any_engine):
    app = create_app(any_engine, CAT, clock=Clock(), context_ttl=0, key_cache_ttl=0)
    client = TestClient(app)
    keys = {"admin": create_key(any_engine, "admin")[1], "read": create_key(any_engine, "read")[1],
            "acme-admin": create_key(any_engine, "admin", customer="acme")[1]}

    def call(method: str, path: str, key: str = "admin", **kw):
        return client.request(method, path, headers={"Authorization": f"Bearer {keys[key]}"}, **kw)

    call.engine = any_engine
    return call


def test_endpoints_crud_and_bad_input(api):
    for body, param in (({"url": "ftp://hooks.example/x"}, "url"), ({"url": "not a url"}, "url"),
                        ({"url": "https://h.example", "event_types": ["invoice.nope"]}, "event_types"),
                        ({"url": "https://h.example", "secret": "whsec_abc"}, "secret")):
        r = api("POST", "/v1/webhook_endpoints", json=body)
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", r.text
        assert r.json()["error"]["param"] == param
    r = api("POST", "/v1/webhook_endpoints", json={"url": "https://h.example", "surprise": 1})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["path"] == "surprise"
    assert api("POST", "/v1/webhook_endpoints", json={}).status_code == 422
    assert api("POST", "/v1/webhook_endpoints", key="read", json={"url": "https://h.example"}).status_code == 403
    assert api("POST", "/v1/webhook_endpoints", key="acme-admin", json={"url": "https://h.example"}).status_code == 403
    made = [api("POST", "/v1/webhook_endpoints", json={"url": f"https://h{i}.example/x",
                                                       "event_types": ["invoice.*"]}).json() for i in range(3)]
    assert all(m["secret"].startswith("whsec_") and m["status"] == "enabled" for m in made)
    first = api("GET", "/v1/webhook_endpoints?limit=2").json()
    assert first["has_more"] and len(first["data"]) == 2 and all("secret" not in e for e in first["data"])
    rest = api("GET", f"/v1/webhook_endpoints?limit=2&starting_after={first['data'][-1]['id']}").json()
    assert not rest["has_more"] and {e["id"] for e in first["data"] + rest["data"]} == {m["id"] for m in made}
    one = made[0]["id"]
    assert api("GET", f"/v1/webhook_endpoints/{one}").json()["url"] == "https://h0.example/x"
    assert api("GET", f"/v1/webhook_endpoints/{one}/secret").json()["secret"] == made[0]["secret"]
    r = api("PATCH", f"/v1/webhook_endpoints/{one}", json={"status": "disabled", "url": "http://h.example/y"})
    assert (r.json()["status"], r.json()["url"]) == ("disabled", "http://h.example/y")
    r = api("PATCH", f"/v1/webhook_endpoints/{one}", json={"url": "mailto:x@y"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "url"
    r = api("PATCH", f"/v1/webhook_endpoints/{one}", json={"rotate_secret": True})
    assert r.json()["secret"] not in (None, made[0]["secret"])
    assert api("GET", "/v1/webhook_endpoints/we_missing").status_code == 404
    assert api("DELETE", f"/v1/webhook_endpoints/{one}").json() == {"id": one, "deleted": True}
    assert api("DELETE", f"/v1/webhook_endpoints/{one}").status_code == 200  # a retry: the same answer
    assert api("GET", f"/v1/webhook_endpoints/{one}").status_code == 404
    assert api("POST", "/v1/webhook_deliveries/replay", json={}).json()["error"]["param"] == "events"
    assert api("GET", "/v1/webhook_deliveries?status=nope").status_code == 422


def test_delivery_log_and_replay_over_http(api):
    clock = Clock()
    with Receiver([500]) as rx:
        ep = api("POST", "/v1/webhook_endpoints", json={"url": rx.url(), "event_types": ["invoice.paid"]}).json()
        with api.engine.begin() as conn:
            enqueue_event(conn, "invoice.paid", "inv_1", "acme", {"invoice": {"id": "inv_1"}}, NOW)
            enqueue_event(conn, "invoice.voided", "inv_2", "acme", {"invoice": {"id": "inv_2"}}, NOW)
        d = WebhookDispatcher(Outbox(api.engine, clock=clock), base_delay=3600)
        assert d.run_once()["retried"] == 1
        log = api("GET", f"/v1/webhook_deliveries?endpoint={ep['id']}").json()
        (row,) = log["data"]
        assert (row["event_id"], row["status"], row["last_status_code"]) == ("invoice.paid:inv_1", "pending", 500)
        assert row["log"][0]["error"] == "HTTP 500" and row["next_attempt_at"] == "2026-10-10T13:00:00Z"
        # replay: due now instead of in an hour
        assert api("POST", "/v1/webhook_deliveries/replay", json={"events": ["invoice.paid:inv_1"]}).json() == {
            "replayed": 1}
        assert d.run_once()["delivered"] == 1
    assert [h["webhook-id"] for h, _ in rx.at("/hooks")] == ["invoice.paid:inv_1"] * 2
    headers, body = rx.at("/hooks")[-1]
    assert verify(ep["secret"], body, headers, now=NOW.timestamp())
    (row,) = api("GET", "/v1/webhook_deliveries?status=delivered").json()["data"]
    assert [a["status_code"] for a in row["log"]] == [500, 200]
