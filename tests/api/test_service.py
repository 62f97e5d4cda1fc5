"""The HTTP API: auth and scopes, customer isolation, error mapping, events, quota, usage,
customers, invoices, plans, OpenAPI."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key, list_keys, revoke_key
from billing.store.models import Invoice
from tests.support.errors import error_of
from tests.support.quota import NOW, T0, Clock, catalog

CAT = catalog()


@pytest.fixture
def api(sqlite_engine):
    clock = Clock()
    app = create_app(sqlite_engine, CAT, clock=clock, context_ttl=0, key_cache_ttl=0)
    client = TestClient(app)
    keys = {scope: create_key(sqlite_engine, scope)[1] for scope in ("ingest", "check", "read", "admin")}
    keys["acme-check"] = create_key(sqlite_engine, "check", customer="acme")[1]
    keys["acme-admin"] = create_key(sqlite_engine, "admin", customer="acme")[1]

    def call(method: str, path: str, key: str | None = "admin", **kw):
        headers = {"Authorization": f"Bearer {keys[key]}"} if key else {}
        headers.update(kw.pop("headers", {}))
        return client.request(method, path, headers=headers, **kw)

    call.client, call.engine, call.clock, call.keys = client, sqlite_engine, clock, keys
    for cid in ("acme", "globex"):
        assert call("POST", "/v1/customers", json={"id": cid}).status_code == 201
        r = call("POST", f"/v1/customers/{cid}/subscriptions", json={"plan": "blocky", "at": T0.isoformat()})
        assert r.status_code == 201, r.text
    return call


def event(i: int, customer: str = "acme", **props) -> dict:
    return {"id": f"e{i}", "customer": customer, "type": "request", "timestamp": (NOW - timedelta(hours=1)).isoformat(),
            "properties": props}


def test_auth_required_and_keys_hashed(api):
    r = api("GET", "/v1/plans", key=None)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    r = api.client.get("/v1/plans", headers={"Authorization": "Bearer bk_nope_nope"})
    assert r.status_code == 401
    r = api.client.get("/v1/plans", headers={"X-API-Key": api.keys["read"]})
    assert r.status_code == 200
    stored = list_keys(api.engine)
    assert all("key_hash" not in k for k in stored) and len(stored) == 6
    from sqlalchemy import text
    with api.engine.connect() as conn:
        hashes = [h for (h,) in conn.execute(text("SELECT key_hash FROM api_key"))]
    assert all(len(h) == 64 for h in hashes) and api.keys["read"] not in hashes


def test_revoked_key_is_refused(api):
    key_id, key = create_key(api.engine, "read")
    assert api.client.get("/v1/plans", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert revoke_key(api.engine, key_id)
    assert api.client.get("/v1/plans", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_scopes(api):
    assert api("POST", "/v1/events", key="read", json={"events": []}).status_code == 403
    assert api("POST", "/v1/events", key="ingest", json={"events": []}).status_code == 200
    assert api("POST", "/v1/quota/check", key="ingest", json={"customer": "acme", "meter": "requests"}).status_code == 403
    assert api("POST", "/v1/quota/check", key="check", json={"customer": "acme", "meter": "requests"}).status_code == 200
    assert api("GET", "/v1/invoices", key="check").status_code == 403
    assert api("POST", "/v1/customers", key="read", json={"id": "x"}).json()["error"]["code"] == "forbidden"


def test_customer_restricted_key(api):
    ok = api("POST", "/v1/quota/check", key="acme-check", json={"customer": "acme", "meter": "requests"})
    assert ok.status_code == 200
    r = api("POST", "/v1/quota/check", key="acme-check", json={"customer": "globex", "meter": "requests"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert api("GET", "/v1/customers/globex/usage", key="acme-check").status_code == 403
    assert api("GET", "/v1/customers/acme/usage", key="acme-check").status_code == 200
    assert api("POST", "/v1/events", key="acme-admin", json={"events": [event(1, "globex")]}).status_code == 403
    assert api("POST", "/v1/customers/globex/seats", key="acme-admin", json={"seats": 3}).status_code == 403
    assert api("GET", "/v1/customers/globex", key="acme-admin").status_code == 403
    # another customer's reservation cannot be committed or released: to this key it does not exist
    res = api("POST", "/v1/quota/reserve", key="check", json={"customer": "globex", "meter": "requests"}).json()
    rid = res["reservation_id"]
    assert api("POST", "/v1/quota/release", key="acme-check", json={"reservation_id": rid}).status_code == 404
    assert api("POST", "/v1/quota/commit", key="acme-check", json={"reservation_id": rid}).status_code == 404
    # invoices: forced to the key's customer; another's invoice is 404, as one that does not exist
    with api.engine.begin() as conn:
        for cid in ("acme", "globex"):
            conn.execute(Invoice.__table__.insert().values(
                dedupe_key=f"k-{cid}", customer_id=cid, plan_id="blocky", plan_version=1, currency="USD",
                period_start=T0, period_end=T0 + timedelta(days=31), created_at=T0, status="finalized"))
    listed = api("GET", "/v1/invoices", key="acme-admin").json()["data"]
    assert [i["customer"] for i in listed] == ["acme"]
    assert api("GET", "/v1/invoices?customer=globex", key="acme-admin").status_code == 403
    globex_id = [i["id"] for i in api("GET", "/v1/invoices").json()["data"] if i["customer"] == "globex"][0]
    assert api("GET", f"/v1/invoices/{globex_id}", key="acme-admin").status_code == 404
    assert api("GET", f"/v1/invoices/{globex_id}", key="read").json()["customer"] == "globex"


@pytest.mark.parametrize("body", [
    b"{not json", b"[", b'"text"', b"{}", b'{"customer": "acme"}',
    b'{"customer": "acme", "meter": "requests", "quantity": -1}',
    b'{"customer": "acme", "meter": "requests", "quantity": "abc"}',
    b'{"customer": "acme", "meter": "requests", "quantity": "NaN"}',
    b'{"customer": "acme", "meter": "requests", "charge": "requests"}',
    b'{"customer": "acme", "meter": "requests", "surprise": 1}',
    b'{"customer": "", "meter": "requests"}',
    b'{"customer": "acme", "meter": "nope"}',
    b'{"customer": "nobody", "meter": "requests"}',
])
def test_malformed_input_is_4xx_with_code(api, body):
    r = api.client.post("/v1/quota/check", content=body,
                        headers={"Authorization": f"Bearer {api.keys['admin']}", "Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    error_of(r.json())


def test_malformed_inputs_elsewhere(api):
    assert api("POST", "/v1/events", json={"events": "nope"}).status_code == 422
    assert api("POST", "/v1/events", json={"events": [1, "x", None]}).json()["rejected"] == 3
    assert api("POST", "/v1/quota/commit", json={"reservation_id": "rsv_x"}).json()["error"]["code"] == "reservation_not_found"
    assert api("POST", "/v1/quota/release", json={}).status_code == 422
    assert api("GET", "/v1/invoices/abc").status_code == 422
    assert api("GET", "/v1/invoices/999").json()["error"]["code"] == "invoice_not_found"
    assert api("GET", "/v1/nope").json()["error"]["code"] == "not_found"
    assert api("POST", "/v1/customers", json={"id": "acme", "timezone": "Mars/Base"}).json()["error"]["code"] == "validation_error"
    assert api("POST", "/v1/customers/acme/subscriptions", json={"plan": "blocky"}).status_code == 409
    assert api("POST", "/v1/customers/zed/subscriptions", json={"plan": "blocky"}).status_code == 404
    assert api("POST", "/v1/customers/acme/subscriptions", json={"plan": "blocky", "at": "2026-01-01T00:00:00"}).status_code == 422
    assert api("GET", "/v1/invoices?limit=0").status_code == 400  # a page's limit: 1 to 100


def test_events_batch_per_event_results(api):
    body = {"events": [event(1), event(1), {**event(1), "properties": {"x": 1}}, event(2, "nobody"),
                       {**event(3), "type": "nope"}]}
    r = api("POST", "/v1/events", key="ingest", json=body)
    assert r.status_code == 200
    js = r.json()
    assert [x["status"] for x in js["results"]] == ["accepted", "duplicate", "conflict", "rejected", "accepted"]
    assert js["results"][3]["code"] == "customer_not_found"
    assert js["results"][4]["code"] == "unmetered_type" and "'nope'" in js["results"][4]["message"]  # kept
    assert (js["accepted"], js["duplicates"], js["conflicts"], js["rejected"], js["unmetered"]) == (2, 1, 1, 1, 1)
    # a bare list is accepted too
    assert api("POST", "/v1/events", key="ingest", json=[event(9)]).json()["accepted"] == 1
    usage = api("GET", "/v1/customers/acme/usage", key="read").json()
    assert usage["meters"]["requests"]["used"] == "2"


def test_quota_flow_over_http(api):
    r = api("POST", "/v1/quota/reserve", key="check",
            json={"customer": "acme", "meter": "requests", "quantity": 99, "request_id": "big", "ttl_seconds": 600})
    assert r.status_code == 200 and r.json()["granted"]
    again = api("POST", "/v1/quota/reserve", key="check",
                json={"customer": "acme", "meter": "requests", "quantity": 99, "request_id": "big", "ttl_seconds": 600})
    assert again.json()["reservation_id"] == r.json()["reservation_id"] and again.json()["replayed"]
    one = api("POST", "/v1/quota/reserve", key="check", json={"customer": "acme", "charge": "requests"}).json()
    assert one["granted"]
    denied = api("POST", "/v1/quota/check", key="check", json={"customer": "acme", "meter": "requests"})
    js = denied.json()
    assert (js["outcome"], js["reason"]) == ("deny", "quota_exhausted")
    assert int(denied.headers["Retry-After"]) == int(js["retry_after"]) or int(denied.headers["Retry-After"]) > 0
    assert api("POST", "/v1/quota/release", key="check", json={"reservation_id": one["reservation_id"]}).json() == {
        "reservation_id": one["reservation_id"], "status": "released"}
    c = api("POST", "/v1/quota/commit", key="check",
            json={"reservation_id": r.json()["reservation_id"], "event": {"id": "big-evt"}})
    assert c.status_code == 200 and c.json()["event"] == "accepted"
    again = api("POST", "/v1/quota/commit", key="check",
                json={"reservation_id": r.json()["reservation_id"], "event": {"id": "big-evt"}})
    assert again.json()["event"] == "duplicate"
    assert api("POST", "/v1/quota/release", key="check",
               json={"reservation_id": r.json()["reservation_id"]}).json()["error"]["code"] == "invalid_transition"
    usage = api("GET", "/v1/customers/acme/usage", key="check").json()
    assert usage["meters"]["requests"] == {"used": "1", "held": "0", "events": 1, "provider_cost": "0"}
    assert usage["charges"][0]["remaining_included"] == "99"


def test_customers_seats_plans_openapi(api):
    r = api("GET", "/v1/customers/acme")
    assert r.json()["subscription"]["plan"] == {"id": "blocky", "version": 1}
    r = api("POST", "/v1/customers/acme/seats", json={"seats": 4})
    assert r.status_code == 200 and r.json()["seats"] == 4
    plans = api("GET", "/v1/plans", key="read").json()["plans"]
    assert {"cursor-pro", "blocky"} <= {p["plan"] for p in plans}
    assert api("GET", "/v1/plans/cursor-pro", key="read").json()["versions"][0]["charges"][0]["key"] == "fast_requests"
    assert api("GET", "/v1/plans/nope", key="read").json()["error"]["code"] == "plan_not_found"
    spec = api.client.get("/openapi.json").json()
    assert {"/v1/events", "/v1/quota/check", "/v1/quota/reserve", "/v1/quota/commit", "/v1/quota/release",
            "/v1/customers/{customer_id}/usage", "/v1/invoices", "/v1/invoices/{invoice_id}", "/v1/plans"} <= set(spec["paths"])
    assert api.client.get("/docs").status_code == 200
    assert api.client.get("/healthz").json() == {"status": "ok"}


def test_webhook_dispatcher_thread_runs_with_the_app(sqlite_engine):
    import threading

    app = create_app(sqlite_engine, CAT, webhook_url="http://127.0.0.1:9/hook", webhook_secret="k")
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert any(t.name == "billing-webhooks" for t in threading.enumerate())
    assert not any(t.name == "billing-webhooks" and t.is_alive() for t in threading.enumerate())


def test_events_with_tasks_and_alerts_over_http(api):
    api("POST", "/v1/customers", json={"id": "bot"})
    api("POST", "/v1/customers/bot/subscriptions", json={"plan": "support-chatbot", "at": T0.isoformat()})
    events = [{"id": f"b{i}", "customer": "bot", "type": "llm.call", "timestamp": (NOW - timedelta(hours=1)).isoformat(),
               "properties": {"feature": "support-chat", "task": "t1"}} for i in range(20)]
    assert api("POST", "/v1/events", key="ingest", json={"events": events}).json()["accepted"] == 20
    d = api("POST", "/v1/quota/check", key="check", json={"customer": "bot", "meter": "messages", "task": "t1"}).json()
    assert (d["outcome"], d["reason"]) == ("deny", "task_limit")  # 20 steps per task
    more = [{**e, "id": f"c{i}", "properties": {"feature": "support-chat"}} for i, e in enumerate(events * 2)]
    api("POST", "/v1/events", key="ingest", json={"events": more[:30]})
    import json

    from billing.reservations.holds import Outbox
    fired = [(json.loads(r["payload"])["data"]["subject"], json.loads(r["payload"])["data"]["threshold_percent"])
             for r in Outbox(api.engine).rows() if r["type"] == "alert.triggered"]
    assert fired == [("charge:messages:included", "50")]  # 50 messages of 100 included


def test_fuzzed_quota_bodies_never_500(api):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                        st.text(max_size=20), st.sampled_from(["acme", "requests", "1e400", "-0", "NaN", "1" * 300]))
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
    fields = st.fixed_dictionaries({}, optional={
        "customer": values, "meter": values, "charge": values, "quantity": values, "model": values,
        "task": values, "tokens": values, "cost": values, "steps": values, "ttl_seconds": values,
        "request_id": values, "reservation_id": values, "event": values})

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(["check", "reserve", "commit", "release"]), st.one_of(fields, values))
    def run(path, body):
        import json as _json

        r = api("POST", f"/v1/quota/{path}", content=_json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {api.keys['admin']}", "Content-Type": "application/json"})
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            error_of(r.json())

    run()


@pytest.mark.parametrize("bad", [
    {"id": 5}, {"id": ""}, {"id": "x" * 300}, {"timestamp": 3}, {"timestamp": "2026-10-10T00:00:00"},
    {"properties": "x"}, {"properties": [1]}, {"type": None}, {"type": "x" * 101}, {"customer": ["acme"]},
    {"customer": "globex"}, {"properties": {"input_tokens": -1}}, {"properties": {"input_tokens": "many"}},
    {"extra_field": 1}, {"timestamp": "2999-01-01T00:00:00Z"}, {"timestamp": "1969-07-20T20:17:00Z"},
    {"timestamp": "0001-01-01T00:00:00+14:00"}, {"timestamp": "9999-12-31T23:59:59-14:00"},
    {"properties": {"note": "x" * 40_000}},
])
def test_commit_with_malformed_events_is_4xx_and_keeps_the_hold(api, bad):
    rid = api("POST", "/v1/quota/reserve", json={"customer": "acme", "meter": "requests"}).json()["reservation_id"]
    r = api("POST", "/v1/quota/commit", json={"reservation_id": rid, "event": bad})
    assert 400 <= r.status_code < 500, r.text
    assert api("GET", "/v1/customers/acme/usage").json()["meters"]["requests"]["held"] == "1"


def test_fast_path_serves_check_and_healthz_like_the_router(api):
    """POST /v1/quota/check and GET /healthz skip FastAPI's layers (billing.api.fastpath):
    same answers, same errors, a bounded body."""
    assert api("GET", "/healthz", key=None).json() == {"status": "ok"}
    ok = api("POST", "/v1/quota/check", key="check", json={"customer": "acme", "meter": "requests"})
    assert ok.status_code == 200 and ok.json()["outcome"] == "allow"
    assert ok.headers["content-type"].startswith("application/json")
    assert api("POST", "/v1/quota/check", key=None, json={"customer": "acme", "meter": "requests"}
               ).json()["error"]["code"] == "unauthenticated"
    bad = api("POST", "/v1/quota/check", key="check", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    huge = api("POST", "/v1/quota/check", key="check",
               json={"customer": "acme", "meter": "requests", "model": "x" * 100_000})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "request_too_large"
    # the router still has the route (OpenAPI, and paths the fast path does not take)
    assert "/v1/quota/check" in api("GET", "/openapi.json", key=None).json()["paths"]


def test_fast_path_reads_repeated_key_headers_like_the_router(api):
    """The first Authorization (or X-API-Key) header counts, on the fast path as on every route."""
    good, bad = f"Bearer {api.keys['check']}", "Bearer bk_nope"
    body = {"customer": "acme", "meter": "requests"}
    for first, second, status in ((bad, good, 401), (good, bad, 200)):
        headers = [("authorization", first), ("authorization", second), ("content-type", "application/json")]
        for path in ("/v1/quota/check", "/v1/quota/reserve"):
            r = api.client.post(path, content=json.dumps(body).encode(), headers=headers)
            assert r.status_code == status, (path, first, r.text)


def test_fast_path_answers_an_unexpected_error_as_json_500(api, monkeypatch):
    """The fast path runs ahead of FastAPI's error middleware: its own last resort gives the
    same body as the app's (a 500 with a stable code), and the next request is served."""
    quota = api.client.app.state.services.quota

    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(quota, "check", broken)
    r = api("POST", "/v1/quota/check", key="check", json={"customer": "acme", "meter": "requests"})
    assert r.status_code == 500 and r.json() == {"error": {
        "type": "api_error", "code": "internal_error", "message": "internal error", "param": None,
        "request_id": r.headers["x-request-id"]}}
    monkeypatch.undo()
    assert api("POST", "/v1/quota/check", key="check", json={"customer": "acme", "meter": "requests"}
               ).status_code == 200


def test_text_postgres_cannot_store_is_4xx_not_500():
    """A NUL character anywhere PostgreSQL would store or compare it is the client's error."""
    from tests.support.db import postgres_server_url
    from tests.support.quota import postgres_database

    postgres_server_url()  # skipped without PostgreSQL, failed when it is required
    with postgres_database() as engine:
        client = TestClient(create_app(engine, CAT, clock=Clock(), context_ttl=0, key_cache_ttl=0))
        headers = {"Authorization": f"Bearer {create_key(engine, 'admin')[1]}"}
        assert client.post("/v1/customers", json={"id": "acme"}, headers=headers).status_code == 201
        calls = [("POST", "/v1/customers", {"id": "a\x00b"}), ("POST", "/v1/customers", {"id": "b", "name": "x\x00"}),
                 ("GET", "/v1/customers/a%00b", None), ("GET", "/v1/customers/a%00b/usage", None),
                 ("POST", "/v1/customers/a%00b/subscriptions", {"plan": "blocky"}),
                 ("POST", "/v1/quota/check", {"customer": "a\x00b", "meter": "requests"}),
                 ("POST", "/v1/quota/reserve", {"customer": "acme", "meter": "requests", "request_id": "r\x00"}),
                 ("POST", "/v1/quota/commit", {"reservation_id": "rsv_\x00"})]
        for method, path, body in calls:
            r = client.request(method, path, json=body, headers=headers)
            assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
            assert r.json()["error"]["code"] and "SELECT" not in r.json()["error"]["message"], r.text
        events = [event(1, task="t-ok"), {**event(2), "id": "e\x00"}, event(3, task="t\x00bad"),
                  event(4, task="t" * 201), event(5)]
        r = client.post("/v1/events", json={"events": events}, headers=headers)
        assert r.status_code == 200, r.text
        assert [x["status"] for x in r.json()["results"]] == ["accepted", "rejected", "rejected", "rejected",
                                                              "accepted"]
        with engine.connect() as conn:  # the good event's agent task usage was counted
            assert conn.exec_driver_sql("SELECT task_id, steps FROM agent_task_usage").all() == [("t-ok", 1)]
