"""The lists (``GET /v1/customers``, ``/v1/subscriptions``, ``/v1/credit_grants``,
``/v1/invoices``, ``/v1/credit_notes``, ``/v1/events``): Stripe's list object, cursor pages
that yield every row once in (created, id) order whichever way and page size they are
walked, filters, keys restricted to a customer, and bad parameters (400 ``parameter_invalid`` / ``parameter_unknown`` naming the param)."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.lists import OCT, error_code, error_param, make_api, ok, walk

LISTS = ["/v1/customers", "/v1/subscriptions", "/v1/credit_grants", "/v1/invoices", "/v1/credit_notes", "/v1/events"]


def _customers(api, names, step=timedelta(0)):
    for name in names:
        ok(api("POST", "/v1/customers", json={"id": name}), 201)
        api.clock.now += step


@pytest.fixture
def api(any_engine):
    return make_api(any_engine)


@pytest.fixture
def sqlite_api(sqlite_engine):  # parameter checks happen before any query: one database is enough
    return make_api(sqlite_engine)


def test_customers_every_row_once_in_order_both_ways(api):
    # ties in created_at (several customers created at one instant) are ordered by id
    names = [f"c{i:03d}" for i in range(23)]
    _customers(api, names[:8])
    api.clock.now += timedelta(seconds=1)
    _customers(api, names[8:][::-1], step=timedelta(microseconds=1))
    expected = names[:8] + names[8:][::-1]
    for limit in (1, 5, 10, 23, 100):
        assert [c["id"] for c in walk(api, "/v1/customers", limit)] == expected
        assert [c["id"] for c in walk(api, "/v1/customers", limit, backward=True)] == expected
    first = ok(api("GET", "/v1/customers"))
    assert len(first["data"]) == 10 and first["has_more"]  # the default limit
    assert first["data"][0] == {"object": "customer", "id": "c000", "name": "", "timezone": "UTC",
                                "currency": "USD", "created_at": "2026-10-10T12:00:00Z"}
    last = ok(api("GET", "/v1/customers", params={"starting_after": first["next_cursor"], "limit": 100}))
    assert not last["has_more"] and len(last["data"]) == 13
    # rows added after a cursor was handed out are found by it (the cursor is a position, not an offset)
    api.clock.now += timedelta(days=1)
    _customers(api, ["zz-late"])
    more = ok(api("GET", "/v1/customers", params={"starting_after": last["next_cursor"]}))
    assert [c["id"] for c in more["data"]] == ["zz-late"] and not more["has_more"]


def test_an_empty_list(api):
    for path in LISTS:
        page = ok(api("GET", path))
        assert page == {"object": "list", "url": path, "data": [], "has_more": False, "next_cursor": None,
                        "previous_cursor": None}


@pytest.mark.parametrize("query, param", [
    ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "-1"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"limit": "1e2"}, "limit"), ({"limit": "9" * 40}, "limit"), ({"limit": "١٢"}, "limit"),
    ({"starting_after": "not a cursor"}, "starting_after"), ({"starting_after": ""}, "starting_after"),
    ({"ending_before": "x" * 5000}, "ending_before"),
    ({"starting_after": base64.urlsafe_b64encode(b'["customers", 1.5, "a"]').decode()}, "starting_after"),
    ({"starting_after": base64.urlsafe_b64encode(b'["customers", 1, 7]').decode()}, "starting_after"),
    ({"starting_after": base64.urlsafe_b64encode(b'{"a": 1}').decode()}, "starting_after"),
    ({"bogus": "1"}, "bogus"), ({"Limit": "5"}, "Limit"), ({"limit": "5", "page": "2"}, "page"),
])
def test_bad_parameters_are_400_naming_the_param(sqlite_api, query, param):
    r = sqlite_api("GET", "/v1/customers", params=query)
    assert r.status_code == 400, r.text
    unknown = param not in ("limit", "starting_after", "ending_before")
    assert error_code(r) == ("parameter_unknown" if unknown else "parameter_invalid") and error_param(r) == param


def test_a_cursor_of_another_list_or_both_directions_is_refused(api):
    _customers(api, ["acme", "globex"])
    cursor = ok(api("GET", "/v1/customers", params={"limit": 1}))["next_cursor"]
    for path in LISTS[1:]:
        r = api("GET", path, params={"starting_after": cursor})
        assert r.status_code == 400 and error_param(r) == "starting_after", path
    r = api("GET", "/v1/customers", params={"starting_after": cursor, "ending_before": cursor})
    assert r.status_code == 400 and error_param(r) == "ending_before"
    for path in LISTS:  # every list refuses what it does not take
        r = api("GET", path, params={"nope": "1"})
        assert r.status_code == 400 and error_param(r) == "nope", path


def test_scopes_and_keys_restricted_to_a_customer(api):
    _customers(api, ["acme", "globex"])
    for path in LISTS:
        assert api("GET", path, key="check").status_code == 403
        assert api("GET", path, key="ingest").status_code == 403
        assert api("GET", path, key=None).status_code == 401
        assert api("GET", path, key="read").status_code == 200
        assert api("GET", path, key="acme-read", params={"customer": "globex"}).status_code == (
            400 if path == "/v1/customers" else 403)  # the customers list has no customer filter
    assert [c["id"] for c in ok(api("GET", "/v1/customers", key="acme-read"))["data"]] == ["acme"]


def _event(i, customer="acme", type="request", hours=1.0, **props):
    from tests.support.quota import NOW

    return {"id": f"e{i}", "customer": customer, "type": type,
            "timestamp": (NOW - timedelta(hours=hours)).isoformat(), "properties": props}


def test_events_by_customer_type_time_and_status(api):
    _customers(api, ["acme", "globex"])
    for cid in ("acme", "globex"):
        ok(api("POST", f"/v1/customers/{cid}/subscriptions", json={"plan": "blocky", "at": OCT.isoformat()}), 201)
    events = [_event(1, hours=5), _event(2, hours=3), _event(3, "globex", hours=4),
              _event(4, type="llm.call", hours=2, model="no-such-model", input_tokens=10),
              _event(5, type="thing.happened", hours=1), _event(6, hours=3)]  # e6: e2's time, later arrival
    ok(api("POST", "/v1/events", key="ingest", json={"events": events}))

    def ids(**params):
        return [(e["customer"], e["id"]) for e in walk(api, "/v1/events", 2, **params)]

    assert ids() == [("acme", "e1"), ("globex", "e3"), ("acme", "e2"), ("acme", "e6"), ("acme", "e4"), ("acme", "e5")]
    assert ids(customer="globex") == [("globex", "e3")]
    assert ids(type="request", customer="acme") == [("acme", "e1"), ("acme", "e2"), ("acme", "e6")]
    assert ids(status="unpriced") == [("acme", "e4")]
    assert ids(status="unmetered") == [("acme", "e5")]
    start = (api.clock.now - timedelta(hours=4)).isoformat()
    end = (api.clock.now - timedelta(hours=2)).isoformat()
    assert ids(start=start, end=end) == [("globex", "e3"), ("acme", "e2"), ("acme", "e6")]
    assert [(e["customer"], e["id"]) for e in walk(api, "/v1/events", 1, key="acme-read")] == [
        ("acme", "e1"), ("acme", "e2"), ("acme", "e6"), ("acme", "e4"), ("acme", "e5")]
    unpriced = ok(api("GET", "/v1/events", params={"status": "unpriced"}))["data"][0]
    assert unpriced["status"] == "unpriced" and unpriced["cost"] == "0" and unpriced["unpriced"]
    assert unpriced["properties"] == {"model": "no-such-model", "input_tokens": 10}
    assert api("GET", "/v1/events", params={"status": "lost"}).status_code in (400, 422)
    assert api("GET", "/v1/events", params={"start": "yesterday"}).status_code in (400, 422)
    assert api("GET", "/v1/events", params={"start": "2026-10-01T00:00:00"}).status_code in (400, 422)  # naive
    r = api("GET", "/v1/events", params={"end": "9999-01-01T00:00:00Z"})
    assert r.status_code == 400 and error_param(r) == "end"


def test_subscriptions_grants_and_documents_lists(api):
    _customers(api, ["acme", "globex"])
    for cid in ("acme", "globex"):
        ok(api("POST", "/v1/subscriptions", json={"customer": cid, "plan": "blocky", "at": OCT.isoformat(),
                                                  "seats": 2}), 201)
    ok(api("POST", "/v1/credit_grants", json={"customer": "globex", "amount": "5", "id": "g-globex"}), 201)
    ok(api("POST", "/v1/credit_grants", json={"customer": "acme", "amount": "12.5", "id": "g-acme"}), 201)
    subs = walk(api, "/v1/subscriptions", 1)
    assert [(s["customer"], s["seats"], s["status"]) for s in subs] == [("acme", 2, "active"), ("globex", 2, "active")]
    assert [s["customer"] for s in walk(api, "/v1/subscriptions", 5, customer="globex")] == ["globex"]
    assert walk(api, "/v1/subscriptions", 5, status="canceled") == []
    assert [g["id"] for g in walk(api, "/v1/credit_grants", 1)] == ["g-acme", "g-globex"]  # created at once: by id
    assert [g["amount"] for g in walk(api, "/v1/credit_grants", 1, customer="acme")] == ["12.5"]
    assert [g["id"] for g in walk(api, "/v1/credit_grants", 1, key="acme-read")] == ["g-acme"]
    assert walk(api, "/v1/invoices", 3) == [] and walk(api, "/v1/credit_notes", 3) == []


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """One SQLite ledger with 157 customers (in runs created at one instant) for the property."""
    from tests.support.quota import make_db

    engine = make_db(f"sqlite:///{tmp_path_factory.mktemp('lists') / 'many.db'}")
    api = make_api(engine)
    names = [f"k{(i * 37) % 157:03d}" for i in range(157)]
    for i, name in enumerate(names):
        if i % 10 == 0:
            api.clock.now += timedelta(seconds=1)
        ok(api("POST", "/v1/customers", json={"id": name}), 201)
    expected = [n for _, n in sorted((i // 10, n) for i, n in enumerate(names))]
    # 140 events over 9 instants (many ties, broken by arrival), in batches of 20
    base = api.clock.now - timedelta(hours=1)
    events = [{"id": f"ev{i}", "customer": names[i % 5], "type": "request",
               "timestamp": (base + timedelta(minutes=(i * 5) % 9)).isoformat(), "properties": {}} for i in range(140)]
    for i in range(0, 140, 20):
        assert ok(api("POST", "/v1/events", key="ingest", json={"events": events[i:i + 20]}))["accepted"] == 20
    with engine.connect() as conn:
        stored = [tuple(r) for r in conn.exec_driver_sql(
            "SELECT customer_id, event_id FROM usage_event ORDER BY ts, id")]
    yield api, expected, stored, names[:5]
    engine.dispose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(1, 100), backward=st.booleans())
def test_walking_every_page_with_any_limit_yields_every_row_once_in_order(many, limit, backward):
    api, expected, _, _ = many
    assert [c["id"] for c in walk(api, "/v1/customers", limit, backward=backward)] == expected


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(1, 100), backward=st.booleans(), which=st.integers(-1, 4))
def test_walking_the_events_yields_each_once_in_time_then_arrival_order(many, limit, backward, which):
    api, _, stored, customers = many
    params = {} if which < 0 else {"customer": customers[which]}
    walked = walk(api, "/v1/events", limit, backward=backward, **params)
    assert [(e["customer"], e["id"]) for e in walked] == [r for r in stored if which < 0 or r[0] == customers[which]]
    times = [e["timestamp"] for e in walked]
    assert times == sorted(times) and len(set(e["id"] for e in walked)) == len(walked)


def test_one_object_routes_refuse_unknown_query_parameters(sqlite_api):
    for path in ("/v1/subscriptions/1", "/v1/credit_grants/g", "/v1/credit_notes/1"):
        r = sqlite_api("GET", path, params={"expand": "customer"})
        assert r.status_code == 400 and error_param(r) == "expand", path
