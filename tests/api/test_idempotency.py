"""``Idempotency-Key`` on every POST (Stripe's semantics), on SQLite and PostgreSQL: replay,
reuse with other parameters, a key in flight, scoping per API key, validation, which
responses are stored (2xx and 4xx but 401/408/409/425/429; never 5xx), retention and
purging, abandoned claims, two API servers on one database."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.api.idempotency import fingerprint
from billing.store.idempotency import IdempotencyStore
from billing.store.types import to_us
from tests.support.quota import NOW, T0, Clock
from tests.support.summed import CAT


class Api:
    """One app over the engine with its own clock; ``post`` sends an Idempotency-Key."""

    def __init__(self, engine, clock: Clock, keys: dict[str, str]):
        self.engine, self.clock, self.keys = engine, clock, keys
        self.app = create_app(engine, CAT, clock=clock, context_ttl=0, key_cache_ttl=0)
        self.client = TestClient(self.app, raise_server_exceptions=False).__enter__()

    def post(self, path: str, body=None, *, key: str | None = None, api_key: str = "admin", headers=None, **kw):
        h = {"Authorization": f"Bearer {self.keys[api_key]}", **(headers or {})}
        if key is not None:
            h["Idempotency-Key"] = key
        if body is not None:
            kw["json"] = body
        return self.client.post(path, headers=h, **kw)

    def get(self, path: str, api_key: str = "admin"):
        return self.client.get(path, headers={"Authorization": f"Bearer {self.keys[api_key]}"})

    def held(self, customer: str = "acme") -> str:
        return self.get(f"/v1/customers/{customer}/usage").json()["meters"]["units"]["held"]

    def close(self) -> None:
        self.client.__exit__(None, None, None)


@pytest.fixture
def api(any_engine):
    keys = {scope: create_key(any_engine, scope)[1] for scope in ("check", "admin")}
    keys["admin2"] = create_key(any_engine, "admin")[1]
    api = Api(any_engine, Clock(), keys)
    for cid in ("acme", "globex"):
        assert api.post("/v1/customers", {"id": cid}).status_code == 201
        r = api.post(f"/v1/customers/{cid}/subscriptions", {"plan": "summed", "at": T0.isoformat()})
        assert r.status_code == 201
    yield api
    api.close()


def record(api: Api, key: str, api_key: str = "admin"):
    key_id = next(k for k in _key_ids(api) if api.keys[api_key].startswith(f"bk_{k}_"))
    return IdempotencyStore(api.engine).get(key_id, key)


def _key_ids(api: Api) -> list[str]:
    from billing.api.auth import list_keys

    return [k["id"] for k in list_keys(api.engine)]


RESERVE = {"customer": "acme", "meter": "units", "quantity": 10, "ttl_seconds": 600}


def test_same_key_same_parameters_replays_without_running_again(api):
    first = api.post("/v1/quota/reserve", RESERVE, key="k-1")
    assert first.status_code == 200 and first.json()["granted"]
    assert "idempotent-replayed" not in first.headers
    # the same parameters: another key order and spacing is the same JSON
    again = api.post("/v1/quota/reserve", key="k-1", headers={"Content-Type": "application/json"},
                     content=b'{ "ttl_seconds": 600, "quantity": 10,  "meter": "units", "customer": "acme" }')
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert api.held() == "10"  # held once
    assert api.post("/v1/quota/reserve", RESERVE, key="k-2").json()["reservation_id"] != first.json()["reservation_id"]
    assert api.held() == "20"


def test_every_post_route_replays(api):
    """Each POST route: a second request with the key answers the first response again,
    marked, and changes nothing (a re-run would answer differently or write again)."""
    rid = api.post("/v1/quota/reserve", RESERVE).json()["reservation_id"]
    rid2 = api.post("/v1/quota/reserve", RESERVE).json()["reservation_id"]
    event = {"id": "e-1", "customer": "acme", "type": "request", "timestamp": NOW.isoformat(),
             "properties": {"units": 1}}
    calls = [("/v1/events", {"events": [event]}),
             ("/v1/quota/check", {"customer": "acme", "meter": "units", "quantity": 1}),
             ("/v1/quota/reserve", RESERVE),
             ("/v1/quota/commit", {"reservation_id": rid, "event": {"properties": {"units": 10}}}),
             ("/v1/quota/release", {"reservation_id": rid2}),
             ("/v1/customers", {"id": "initech"}),
             ("/v1/customers/initech/subscriptions", {"plan": "summed", "at": T0.isoformat()}),
             ("/v1/customers/initech/seats", {"seats": 3})]
    for i, (path, body) in enumerate(calls):
        first = api.post(path, body, key=f"route-{i}")
        assert first.status_code in (200, 201), (path, first.text)
        api.clock.now += timedelta(seconds=1)  # a re-run would show another time or state
        again = api.post(path, body, key=f"route-{i}")
        assert (again.status_code, again.content) == (first.status_code, first.content), path
        assert again.headers["idempotent-replayed"] == "true"
        assert record(api, f"route-{i}")["status"] == "done"
    usage = api.get("/v1/customers/acme/usage").json()["meters"]["units"]
    assert (usage["used"], usage["held"], usage["events"]) == ("11", "10", 2)  # e-1 and the commit, each once


def test_same_key_other_parameters_is_409_reused(api):
    assert api.post("/v1/quota/reserve", RESERVE, key="k").status_code == 200
    for path, body in (("/v1/quota/reserve", {**RESERVE, "quantity": 11}),
                       ("/v1/quota/check", {"customer": "acme", "meter": "units", "quantity": 10})):
        r = api.post(path, body, key="k")
        assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_reused", r.text
    r = api.post("/v1/quota/reserve?x=1", RESERVE, key="k")
    assert r.json()["error"]["code"] == "idempotency_key_reused"
    assert api.held() == "10"


def test_keys_are_scoped_per_api_key(api):
    a = api.post("/v1/quota/reserve", RESERVE, key="shared")
    b = api.post("/v1/quota/reserve", RESERVE, key="shared", api_key="admin2")
    assert "idempotent-replayed" not in b.headers and b.json()["reservation_id"] != a.json()["reservation_id"]
    c = api.post("/v1/quota/reserve", {**RESERVE, "quantity": 5}, key="shared", api_key="check")
    assert c.status_code == 200 and c.json()["granted"]  # another API key: another key, not a reuse
    for api_key, answer in (("admin", a), ("admin2", b), ("check", c)):  # each API key's own record
        again = api.post("/v1/quota/reserve", {**RESERVE, "quantity": 5} if api_key == "check" else RESERVE,
                         key="shared", api_key=api_key)
        assert again.content == answer.content and again.headers["idempotent-replayed"] == "true"
    assert api.held() == "25"


@pytest.mark.parametrize("value", ["x" * 256, "", "tab\there", "caf\u00e9", "del\x7f"])
def test_invalid_keys_are_400(api, value):
    r = api.client.post("/v1/quota/reserve", json=RESERVE,
                        headers=[("Authorization", f"Bearer {api.keys['admin']}"),
                                 ("Idempotency-Key", value.encode("latin-1"))])
    assert r.status_code == 400 and r.json()["error"]["code"] == "idempotency_key_invalid", r.text
    assert api.held() == "0"


def test_key_limits(api):
    assert api.post("/v1/quota/reserve", RESERVE, key="k" * 255).status_code == 200
    assert api.post("/v1/quota/reserve", RESERVE, key="k" * 255).headers["idempotent-replayed"] == "true"
    assert api.post("/v1/quota/reserve", RESERVE, key=" !~{}\"'").status_code == 200  # printable ASCII
    two = api.client.post("/v1/quota/reserve", json=RESERVE,
                          headers=[("Authorization", f"Bearer {api.keys['admin']}"), ("Idempotency-Key", "a"),
                                   ("Idempotency-Key", "b")])
    assert two.status_code == 400 and two.json()["error"]["code"] == "idempotency_key_invalid"


def test_a_4xx_is_replayed(api):
    first = api.post("/v1/customers/zed/subscriptions", {"plan": "summed"}, key="sub-zed")
    assert first.status_code == 404 and first.json()["error"]["code"] == "customer_not_found"
    assert api.post("/v1/customers", {"id": "zed"}).status_code == 201
    again = api.post("/v1/customers/zed/subscriptions", {"plan": "summed"}, key="sub-zed")
    assert (again.status_code, again.content) == (404, first.content)  # Stripe: the stored outcome
    assert again.headers["idempotent-replayed"] == "true"
    bad = api.post("/v1/quota/reserve", {"customer": "acme"}, key="bad-body")
    assert bad.status_code == 422
    assert api.post("/v1/quota/reserve", {"customer": "acme"}, key="bad-body").headers["idempotent-replayed"] == "true"
    assert api.post("/v1/customers/zed/subscriptions", {"plan": "summed"}, key="sub-zed-2").status_code == 201


def test_409_and_401_are_not_stored(api):
    r = api.post("/v1/customers/acme/subscriptions", {"plan": "summed"}, key="dup-sub")
    assert r.status_code == 409 and record(api, "dup-sub") is None
    again = api.post("/v1/customers/acme/subscriptions", {"plan": "summed"}, key="dup-sub")
    assert again.status_code == 409 and "idempotent-replayed" not in again.headers
    nobody = api.client.post("/v1/quota/reserve", json=RESERVE,
                             headers={"Authorization": "Bearer bk_no_no", "Idempotency-Key": "x"})
    assert nobody.status_code == 401 and nobody.json()["error"]["code"] == "unauthenticated"


def test_a_5xx_is_not_stored_and_the_retry_runs(api, monkeypatch):
    quota = api.app.state.services.quota
    real = quota.reserve
    calls = []

    def failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(quota, "reserve", failing_once)
    r = api.post("/v1/quota/reserve", RESERVE, key="flaky")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    assert record(api, "flaky") is None
    again = api.post("/v1/quota/reserve", RESERVE, key="flaky")
    assert again.status_code == 200 and again.json()["granted"] and "idempotent-replayed" not in again.headers
    assert api.post("/v1/quota/reserve", RESERVE, key="flaky").headers["idempotent-replayed"] == "true"
    assert len(calls) == 2 and api.held() == "10"


def test_a_key_in_flight_is_409_in_use(api, monkeypatch):
    quota = api.app.state.services.quota
    real = quota.reserve
    entered, go = threading.Event(), threading.Event()

    def slow(*args, **kwargs):
        entered.set()
        assert go.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(quota, "reserve", slow)
    other = TestClient(api.app, raise_server_exceptions=False)  # a second connection, its own event loop
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(api.post, "/v1/quota/reserve", RESERVE, key="slow")
        assert entered.wait(20)
        busy = other.post("/v1/quota/reserve", json=RESERVE,
                          headers={"Authorization": f"Bearer {api.keys['admin']}", "Idempotency-Key": "slow"})
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "idempotency_key_in_use"
        assert busy.headers["retry-after"] == "1"
        reused = other.post("/v1/quota/reserve", json={**RESERVE, "quantity": 1},
                            headers={"Authorization": f"Bearer {api.keys['admin']}", "Idempotency-Key": "slow"})
        assert reused.json()["error"]["code"] == "idempotency_key_reused"
        go.set()
        assert first.result(20).status_code == 200
    assert api.post("/v1/quota/reserve", RESERVE, key="slow").headers["idempotent-replayed"] == "true"
    assert api.held() == "10"


def test_an_abandoned_claim_is_taken_over_after_its_lease(api):
    """A server died while running the request (its claim stays in flight): the key is in use
    until the claim's lease (30 s) runs out, then the next request runs."""
    key_id = next(k for k in _key_ids(api) if api.keys["admin"].startswith(f"bk_{k}_"))
    body = b'{"customer":"acme","meter":"units","quantity":10,"ttl_seconds":600}'
    store = IdempotencyStore(api.engine)
    claim = store.claim(key_id, "dead", fingerprint("POST", "/v1/quota/reserve", b"", body), "a-dead-server",
                        now_us=to_us(api.clock.now), lease_us=30_000_000, retention_us=86_400_000_000)
    assert claim.outcome == "owned"
    assert api.post("/v1/quota/reserve", RESERVE, key="dead").json()["error"]["code"] == "idempotency_key_in_use"
    api.clock.now += timedelta(seconds=31)
    r = api.post("/v1/quota/reserve", RESERVE, key="dead")
    assert r.status_code == 200 and r.json()["granted"] and "idempotent-replayed" not in r.headers
    assert store.get(key_id, "dead")["owner"] != "a-dead-server"
    assert not store.finish(key_id, "dead", "a-dead-server", 200, "[]", b"{}")  # the dead owner cannot store
    assert api.post("/v1/quota/reserve", RESERVE, key="dead").content == r.content


def test_keys_are_kept_24_hours_then_purged(api):
    first = api.post("/v1/quota/reserve", RESERVE, key="old")
    api.clock.now += timedelta(hours=23, minutes=59)
    assert api.post("/v1/quota/reserve", RESERVE, key="old").content == first.content
    assert api.post("/v1/quota/reserve", {**RESERVE, "quantity": 1}, key="old").status_code == 409
    api.post("/v1/quota/reserve", RESERVE, key="younger")
    api.clock.now += timedelta(minutes=2)  # "old" is past 24 hours: a new key, whatever its parameters
    fresh = api.post("/v1/quota/reserve", {**RESERVE, "quantity": 1}, key="old")
    assert fresh.status_code == 200 and "idempotent-replayed" not in fresh.headers
    api.clock.now += timedelta(hours=24, minutes=1)
    assert api.app.state.idempotency.purge() == 2  # both past retention now
    assert record(api, "old") is None and record(api, "younger") is None


def test_purge_deletes_only_expired_records_in_batches(any_engine):
    store = IdempotencyStore(any_engine)
    day = 86_400_000_000
    now = to_us(NOW)
    for i in range(25):
        claim = store.claim("s", f"k{i:02}", "f", "o", now_us=now - 2 * day, lease_us=1, retention_us=day)
        assert claim.outcome == "owned"
    store.claim("s", "live", "f", "o", now_us=now - 2 * day, lease_us=3 * day, retention_us=day)  # still leased
    store.claim("s", "new", "f", "o", now_us=now, lease_us=1, retention_us=day)
    assert store.purge(now_us=now, retention_us=day, batch=10) == 25
    assert store.get("s", "live") is not None and store.get("s", "new") is not None
    assert store.purge(now_us=now, retention_us=day) == 0


def test_two_api_servers_share_the_keys(any_engine):
    """Two app instances (each its own engine and connections) on one database: a key used
    on one is replayed by the other; 24 requests with one key sent at once to both run it
    once, the others are replays or 409 idempotency_key_in_use, never an error."""
    from billing.store.db import make_engine

    keys = {"admin": create_key(any_engine, "admin")[1]}
    clock = Clock()
    other_engine = make_engine(any_engine.url.render_as_string(hide_password=False))
    a, b = Api(any_engine, clock, keys), Api(other_engine, clock, keys)
    try:
        assert a.post("/v1/customers", {"id": "acme"}).status_code == 201
        assert a.post("/v1/customers/acme/subscriptions", {"plan": "summed", "at": T0.isoformat()}).status_code == 201
        first = a.post("/v1/quota/reserve", RESERVE, key="one")
        replay = b.post("/v1/quota/reserve", RESERVE, key="one")
        assert replay.content == first.content and replay.headers["idempotent-replayed"] == "true"

        for round_ in range(3):
            barrier = threading.Barrier(24)
            clients = [TestClient(app.app, raise_server_exceptions=False) for app in (a, b) for _ in range(12)]

            def send(client: TestClient):
                barrier.wait(20)
                return client.post("/v1/quota/reserve", json=RESERVE, headers={
                    "Authorization": f"Bearer {keys['admin']}", "Idempotency-Key": f"race-{round_}"})

            with ThreadPoolExecutor(24) as pool:
                answers = list(pool.map(send, clients))
            ran = [r for r in answers if r.status_code == 200 and "idempotent-replayed" not in r.headers]
            replayed = [r for r in answers if r.headers.get("idempotent-replayed") == "true"]
            busy = [r for r in answers if r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_in_use"]
            assert len(ran) == 1 and len(ran) + len(replayed) + len(busy) == 24, [r.text for r in answers]
            assert all(r.content == ran[0].content for r in replayed)
        assert a.held() == str(10 * 4)
    finally:
        a.close()
        b.close()
        other_engine.dispose()


def test_property_fingerprint_is_the_json_content():
    """Property: the fingerprint ignores key order and spacing of a JSON body, and tells
    apart any change of a value, of the path or of the query."""
    import json
    import random

    from hypothesis import given, settings
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.text(max_size=8)
    bodies = st.dictionaries(st.text(min_size=1, max_size=6), scalars | st.lists(scalars, max_size=3), max_size=6)

    @settings(max_examples=100, deadline=None)
    @given(body=bodies, seed=st.integers(0, 10**6))
    def check(body, seed):
        items = list(body.items())
        random.Random(seed).shuffle(items)
        spaced = json.dumps(dict(items), indent=seed % 3 or None, separators=(", ", " : ")).encode()
        base = fingerprint("POST", "/v1/quota/reserve", b"", json.dumps(body).encode())
        assert fingerprint("POST", "/v1/quota/reserve", b"", spaced) == base
        assert fingerprint("POST", "/v1/quota/check", b"", json.dumps(body).encode()) != base
        assert fingerprint("POST", "/v1/quota/reserve", b"a=1", json.dumps(body).encode()) != base
        changed = {**body, "\x00new": 1}
        assert fingerprint("POST", "/v1/quota/reserve", b"", json.dumps(changed).encode()) != base

    check()


def test_the_largest_batch_response_is_stored_and_replayed(api):
    """10,000 events (the batch limit) under one key: the ~1 MB answer is stored and replayed
    byte for byte; nothing is ingested twice."""
    stamp = NOW.isoformat()
    events = [{"id": f"big-{i}", "customer": "acme", "type": "request", "timestamp": stamp,
               "properties": {"units": 1}} for i in range(10_000)]
    first = api.post("/v1/events", {"events": events}, key="big-batch")
    assert first.status_code == 200 and first.json()["accepted"] == 10_000
    again = api.post("/v1/events", {"events": events}, key="big-batch")
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert api.get("/v1/customers/acme/usage").json()["meters"]["units"]["events"] == 10_000


def test_a_database_that_cannot_claim_the_key_is_503_and_nothing_runs(api, monkeypatch):
    def unreachable(*args, **kwargs):
        from sqlalchemy.exc import OperationalError

        raise OperationalError("INSERT", {}, Exception("connection refused"))

    monkeypatch.setattr(api.app.state.idempotency.store, "claim", unreachable)
    r = api.post("/v1/quota/reserve", RESERVE, key="no-db")
    assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable" and r.headers["retry-after"] == "1"
    monkeypatch.undo()
    assert api.held() == "0"
    assert api.post("/v1/quota/reserve", RESERVE, key="no-db").json()["granted"]
