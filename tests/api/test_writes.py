"""The writes the CLI could only do before (SQLite and PostgreSQL): subscriptions created,
re-seated, moved to another plan and canceled; credits granted; periods closed; invoices
paid, voided, written off. Each through the CLI's own service, with its rules and codes,
``Idempotency-Key`` replays, keys restricted to a customer, and two servers at once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from tests.support.lists import NOV, OCT, error_code, make_api, ok, walk


@pytest.fixture
def api(any_engine):
    call = make_api(any_engine)
    for cid in ("acme", "globex"):
        ok(call("POST", "/v1/customers", json={"id": cid}), 201)
    return call


def _count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


def test_subscription_lifecycle(api):
    sub = ok(api("POST", "/v1/subscriptions", json={"customer": "acme", "plan": "team", "seats": 3,
                                                     "at": OCT.isoformat()}), 201)
    assert sub["object"] == "subscription" and sub["plan"] == {"id": "team", "version": 1}
    assert (sub["customer"], sub["status"], sub["seats"], sub["started_at"]) == ("acme", "active", 3,
                                                                                 "2026-10-01T00:00:00Z")
    sid = sub["id"]
    assert ok(api("GET", f"/v1/subscriptions/{sid}")) == sub
    api.clock.now = datetime(2026, 10, 20, tzinfo=UTC)
    seated = ok(api("POST", f"/v1/subscriptions/{sid}/seats", json={"seats": 5, "at": "2026-10-16T00:00:00Z"}))
    assert seated["seats"] == 5 and seated["id"] == sid
    moved = ok(api("POST", f"/v1/subscriptions/{sid}/change_plan",
                   json={"plan": "support-chatbot", "at": "2026-10-20T00:00:00Z"}), 201)
    assert moved["previous"] == sid and moved["plan"]["id"] == "support-chatbot" and moved["seats"] == 5
    old = ok(api("GET", f"/v1/subscriptions/{sid}"))
    assert old["status"] == "replaced" and old["ended_at"] == "2026-10-20T00:00:00Z" and old["seats"] == 5
    # the replaced subscription is no longer in force: no seats, plan change or cancel through it
    for action, body in (("seats", {"seats": 1}), ("change_plan", {"plan": "team"}), ("cancel", {})):
        r = api("POST", f"/v1/subscriptions/{sid}/{action}", json=body)
        assert r.status_code == 404 and error_code(r) == "subscription_not_found", action
    api.clock.now = datetime(2026, 10, 25, tzinfo=UTC)
    ended = ok(api("POST", f"/v1/subscriptions/{moved['id']}/cancel"))  # no body: now
    assert ended["status"] == "canceled" and ended["ended_at"] == "2026-10-25T00:00:00Z"
    assert [s["status"] for s in walk(api, "/v1/subscriptions", 1, customer="acme")] == ["replaced", "canceled"]
    # the same rules and codes as the CLI's
    r = api("POST", "/v1/subscriptions", json={"customer": "globex", "plan": "nope"})
    assert r.status_code == 404 and error_code(r) == "plan_not_found"
    r = api("POST", "/v1/subscriptions", json={"customer": "nobody", "plan": "team"})
    assert r.status_code == 404 and error_code(r) == "customer_not_found"
    ok(api("POST", "/v1/subscriptions", json={"customer": "globex", "plan": "team", "at": OCT.isoformat()}), 201)
    r = api("POST", "/v1/subscriptions", json={"customer": "globex", "plan": "team"})
    assert r.status_code == 409 and error_code(r) == "subscription_exists"
    for body in ({"customer": "globex", "plan": "team", "seats": -1}, {"customer": "globex", "plan": "team",
                                                                      "at": "2026-10-01T00:00:00"},
                 {"customer": "globex", "plan": "team", "surprise": 1}, {"plan": "team"}):
        assert api("POST", "/v1/subscriptions", json=body).status_code == 422, body
    assert api("GET", "/v1/subscriptions/0").status_code == 422
    assert error_code(api("GET", "/v1/subscriptions/999")) == "subscription_not_found"


def test_keys_restricted_to_a_customer_and_scopes(api):
    globex = ok(api("POST", "/v1/subscriptions", json={"customer": "globex", "plan": "team", "at": OCT.isoformat()}),
                201)
    # another customer's subscription is, to this key, one that does not exist
    assert error_code(api("GET", f"/v1/subscriptions/{globex['id']}", key="acme-read")) == "subscription_not_found"
    r = api("POST", f"/v1/subscriptions/{globex['id']}/cancel", key="acme-admin", json={})
    assert r.status_code == 404
    r = api("POST", "/v1/subscriptions", key="acme-admin", json={"customer": "globex", "plan": "team"})
    assert r.status_code == 403
    r = api("POST", "/v1/credit_grants", key="acme-admin", json={"customer": "globex", "amount": "1"})
    assert r.status_code == 403
    assert api("POST", "/v1/invoices/close", key="acme-admin", json={"as_of": OCT.isoformat()}).status_code == 403
    for path, body in (("/v1/subscriptions", {"customer": "acme", "plan": "team"}),
                       ("/v1/credit_grants", {"customer": "acme", "amount": "1"}),
                       ("/v1/invoices/close", {"as_of": OCT.isoformat()})):
        assert api("POST", path, key="read", json=body).status_code == 403
    assert _count(api.engine, "credit_grant") == 0 and _count(api.engine, "subscription") == 1
    # its own customer's: allowed
    own = ok(api("POST", "/v1/subscriptions", key="acme-admin", json={"customer": "acme", "plan": "team",
                                                                      "at": OCT.isoformat()}), 201)
    assert ok(api("POST", f"/v1/subscriptions/{own['id']}/seats", key="acme-admin", json={"seats": 4}))["seats"] == 4
    ok(api("POST", "/v1/credit_grants", key="acme-admin", json={"customer": "acme", "amount": "1"}), 201)
    assert [s["id"] for s in walk(api, "/v1/subscriptions", 5, key="acme-read")] == [own["id"]]


def test_credit_grants(api):
    g = ok(api("POST", "/v1/credit_grants", json={"customer": "acme", "amount": "25.00", "id": "welcome",
                                                  "expires_at": "2027-01-01T00:00:00Z", "at": OCT.isoformat()}), 201)
    assert g == {"object": "credit_grant", "id": "welcome", "customer": "acme", "name": "Prepaid credits",
                 "amount": "25", "remaining": "25", "currency": "USD", "effective_at": "2026-10-01T00:00:00Z",
                 "expires_at": "2027-01-01T00:00:00Z", "applies_to": None, "created_at": "2026-10-01T00:00:00Z"}
    assert ok(api("GET", "/v1/credit_grants/welcome")) == g
    again = ok(api("POST", "/v1/credit_grants", json={"customer": "acme", "amount": "25", "id": "welcome",
                                                      "at": OCT.isoformat()}), 201)
    assert again["id"] == "welcome" and _count(api.engine, "credit_grant") == 1  # the same grant
    r = api("POST", "/v1/credit_grants", json={"customer": "acme", "amount": "30", "id": "welcome"})
    assert r.status_code == 409 and error_code(r) == "conflict"
    for amount in ("0", "-1", "1.0000001", "1e13", "NaN", "Infinity", "lots"):
        r = api("POST", "/v1/credit_grants", json={"customer": "acme", "amount": amount})
        assert r.status_code == 422 and error_code(r) == "validation_error", amount
    r = api("POST", "/v1/credit_grants", json={"customer": "acme", "amount": "5", "at": "2026-10-02T00:00:00Z",
                                               "expires_at": "2026-10-01T00:00:00Z"})
    assert r.status_code == 422
    r = api("POST", "/v1/credit_grants", json={"customer": "nobody", "amount": "5"})
    assert error_code(r) == "customer_not_found"
    assert error_code(api("GET", "/v1/credit_grants/nope")) == "not_found"
    assert api("GET", "/v1/credit_grants/welcome", key="acme-read").status_code == 200
    ok(api("POST", "/v1/credit_grants", json={"customer": "globex", "amount": "5", "id": "g2"}), 201)
    assert api("GET", "/v1/credit_grants/g2", key="acme-read").status_code == 404
    assert _count(api.engine, "credit_grant") == 2


def test_idempotency_key_replays_a_write(api):
    headers = {"Idempotency-Key": "grant-once"}
    first = api("POST", "/v1/credit_grants", json={"customer": "acme", "amount": "7.5"}, headers=headers)
    second = api("POST", "/v1/credit_grants", json={"customer": "acme", "amount": "7.5"}, headers=headers)
    assert first.status_code == second.status_code == 201 and first.json() == second.json()
    assert second.headers.get("idempotent-replayed") == "true" and _count(api.engine, "credit_grant") == 1
    other = api("POST", "/v1/credit_grants", json={"customer": "acme", "amount": "8"}, headers=headers)
    assert other.status_code == 409 and error_code(other) == "idempotency_key_reused"
    sub = ok(api("POST", "/v1/subscriptions", json={"customer": "acme", "plan": "team", "at": OCT.isoformat()}), 201)
    cancel = {"Idempotency-Key": "cancel-1"}
    a = api("POST", f"/v1/subscriptions/{sub['id']}/cancel", json={"at": "2026-10-05T00:00:00Z"}, headers=cancel)
    b = api("POST", f"/v1/subscriptions/{sub['id']}/cancel", json={"at": "2026-10-05T00:00:00Z"}, headers=cancel)
    assert a.status_code == b.status_code == 200 and a.json() == b.json() and b.headers["idempotent-replayed"] == "true"


def _october(api):
    for cid, seats in (("acme", 3), ("globex", 2)):
        ok(api("POST", "/v1/subscriptions", json={"customer": cid, "plan": "team", "seats": seats,
                                                  "at": OCT.isoformat()}), 201)
    api.clock.now = NOV + timedelta(days=1)


def test_close_pay_void_and_the_lists_of_documents(api):
    _october(api)
    r = api("POST", "/v1/invoices/close", json={"as_of": (NOV + timedelta(days=30)).isoformat()})
    assert r.status_code == 422 and error_code(r) == "validation_error"  # after the clock
    for as_of in ("2100-01-01T00:00:00Z", "1999-12-31T23:59:59Z"):  # outside the engine's window, as in the CLI
        r = api("POST", "/v1/invoices/close", json={"as_of": as_of, "allow_future": True})
        assert r.status_code == 422 and error_code(r) == "validation_error", as_of
    closed = ok(api("POST", "/v1/invoices/close", json={"as_of": NOV.isoformat()}))
    assert len(closed["invoices"]) == 2 and closed["credit_notes"] == []
    assert ok(api("POST", "/v1/invoices/close", json={"as_of": NOV.isoformat()}))["invoices"] == []  # idempotent
    listed = walk(api, "/v1/invoices", 1)
    assert [(i["customer"], i["status"], i["lines"]) for i in listed] == [("acme", "finalized", None),
                                                                        ("globex", "finalized", None)]
    acme, globex = listed
    assert (acme["total"], globex["total"]) == ("90.00", "60.00")  # 3 and 2 seats at $30
    paid = ok(api("POST", f"/v1/invoices/{acme['id']}/pay", json={"at": "2026-11-05T10:00:00Z"}))
    assert paid["status"] == "paid" and paid["paid_at"].startswith("2026-11-05T10:00:00") and paid["lines"]
    assert ok(api("POST", f"/v1/invoices/{acme['id']}/pay")) == paid  # a move made again changes nothing
    r = api("POST", f"/v1/invoices/{acme['id']}/void")
    assert r.status_code == 409 and error_code(r) == "invalid_transition"
    assert ok(api("POST", f"/v1/invoices/{globex['id']}/mark_uncollectible"))["status"] == "uncollectible"
    assert ok(api("POST", f"/v1/invoices/{globex['id']}/void", json={}))["status"] == "void"
    assert [i["status"] for i in walk(api, "/v1/invoices", 5, status="void")] == ["void"]
    assert [i["customer"] for i in walk(api, "/v1/invoices", 5, key="acme-read")] == ["acme"]
    assert api("POST", f"/v1/invoices/{globex['id']}/pay", key="acme-admin").status_code == 404
    assert error_code(api("POST", "/v1/invoices/999999/pay")) == "invoice_not_found"
    assert api("POST", "/v1/invoices/0/pay").status_code == 422
    assert api("POST", f"/v1/invoices/{acme['id']}/pay", json={"at": "2200-01-01T00:00:00Z"}).status_code == 422
    assert walk(api, "/v1/credit_notes", 5) == []
    assert error_code(api("GET", f"/v1/credit_notes/{acme['id']}")) == "invoice_not_found"  # an invoice, not one


def test_a_period_re_rated_lower_issues_a_credit_note_listed_readable_and_voidable(any_engine):
    from tests.support.close_scenario import CATALOG, Events, d

    api = make_api(any_engine, plans=CATALOG)
    ok(api("POST", "/v1/customers", json={"id": "v"}), 201)
    ok(api("POST", "/v1/subscriptions", json={"customer": "v", "plan": "volume-requests", "at": OCT.isoformat()}), 201)
    ev = Events()
    api.clock.now = d(10, 20)
    ok(api("POST", "/v1/events", key="ingest", json={"events": ev("v", d(10, 5), 100)}))
    api.clock.now = d(11, 2)
    ok(api("POST", "/v1/invoices/close", json={"as_of": NOV.isoformat()}))
    api.clock.now = d(12, 2)
    ok(api("POST", "/v1/events", key="ingest", json={"events": ev("v", d(10, 6), 10)}))  # October, late
    closed = ok(api("POST", "/v1/invoices/close", json={"as_of": d(12, 1).isoformat()}))
    (note,) = walk(api, "/v1/credit_notes", 1)
    assert closed["credit_notes"] == [note["id"]] and note["object"] == "credit_note" and note["total"] == "-4.00"
    assert [i["total"] for i in walk(api, "/v1/invoices", 1)] == ["70.00", "0.00"]  # October, November
    full = ok(api("GET", f"/v1/credit_notes/{note['id']}"))
    assert full["corrects_invoice_id"] == walk(api, "/v1/invoices", 1)[0]["id"] and full["lines"]
    assert error_code(api("POST", f"/v1/invoices/{note['id']}/pay")) == "invalid_transition"  # never paid
    assert ok(api("POST", f"/v1/invoices/{note['id']}/void"))["status"] == "void"


def test_two_servers_close_and_pay_at_once(api):
    _october(api)
    other = make_api(api.engine, api.clock)
    answers: list = []

    def close(call):
        answers.append(call("POST", "/v1/invoices/close", json={"as_of": NOV.isoformat()}))

    threads = [threading.Thread(target=close, args=(c,)) for c in (api, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert sorted(len(a.json()["invoices"]) for a in answers) == [0, 2]  # one close made both, once
    assert _count(api.engine, "invoice") == 2
    (acme, _globex) = walk(api, "/v1/invoices", 10)
    moves: list = []

    def move(call, action):
        moves.append((action, call("POST", f"/v1/invoices/{acme['id']}/{action}")))

    threads = [threading.Thread(target=move, args=(api, "pay")), threading.Thread(target=move, args=(other, "void"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for _, r in moves)
    assert statuses == [200, 409], [r.text for _, r in moves]  # exactly one move wins
    winner = next(action for action, r in moves if r.status_code == 200)
    assert ok(api("GET", f"/v1/invoices/{acme['id']}"))["status"] == {"pay": "paid", "void": "void"}[winner]
