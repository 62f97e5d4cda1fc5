"""Contracts over HTTP (``billing.api.contracts``): overrides, coupons and term commitments
added through the API reach the close (their own invoice lines) and the quota decision;
bad input answers 422 ``contract_invalid`` naming the field; a key restricted to one
customer acts on that customer's subscriptions only."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.catalog import Catalog, parse_plan_text
from tests.support.db import invoicing_catalog
from tests.support.quota import Clock

SSO = parse_plan_text("""plan: sso
name: SSO add-on
effective_from: 2026-01-01T00:00:00Z
fees:
  - {type: flat, key: sso, amount: "31.00"}
""")
CAT = Catalog([*invoicing_catalog().all(), SSO])
OCT = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture
def api(sqlite_engine):
    clock = Clock(datetime(2026, 10, 2, tzinfo=UTC))
    app = create_app(sqlite_engine, CAT, clock=clock, context_ttl=0, key_cache_ttl=0)
    client = TestClient(app)
    keys = {"admin": create_key(sqlite_engine, "admin")[1], "read": create_key(sqlite_engine, "read")[1],
            "check": create_key(sqlite_engine, "check")[1],
            "globex-admin": create_key(sqlite_engine, "admin", customer="globex")[1]}

    def call(method: str, path: str, key: str = "admin", **kw):
        return client.request(method, path, headers={"Authorization": f"Bearer {keys[key]}"}, **kw)

    call.app, call.clock = app, clock
    for cid in ("acme", "globex"):
        assert call("POST", "/v1/customers", json={"id": cid}).status_code == 201
        r = call("POST", f"/v1/customers/{cid}/subscriptions", json={"plan": "copilot-premium", "at": OCT.isoformat()})
        assert r.status_code == 201, r.text
    return call


def requests(n: int, customer: str = "acme") -> dict:
    return {"events": [{"id": f"{customer}-{i}", "customer": customer, "type": "request",
                        "timestamp": "2026-10-05T00:00:00Z", "properties": {"model": "o3"}} for i in range(n)]}


def test_contract_through_the_api_reaches_the_invoice_and_the_quota(api):
    r = api("POST", "/v1/subscriptions/1/overrides", json={"overrides": [
        {"path": "charges/premium_requests/price/unit_price", "value": "0.05", "starts_at": "2026-10-01T00:00:00Z"},
        {"path": "charges/premium_requests/included", "value": {"pooled": 50}, "starts_at": "2026-10-01T00:00:00Z"}]})
    assert r.status_code == 201, r.text
    assert [o["path"] for o in r.json()] == ["charges/premium_requests/price/unit_price",
                                             "charges/premium_requests/included"]
    r = api("POST", "/v1/coupons", json={"code": "LAUNCH", "percent": "10", "duration": "once"})
    assert r.status_code == 201 and r.json()["percent"] == "10"
    r = api("POST", "/v1/subscriptions/1/coupons", json={"code": "LAUNCH", "at": "2026-10-02T00:00:00Z"})
    assert r.status_code == 201 and r.json()["ends_at"] == "2026-11-01T00:00:00Z", r.text
    r = api("POST", "/v1/subscriptions/1/commitments", json={"amount": "600", "starts_at": "2026-10-01T00:00:00Z",
                                                             "ends_at": "2027-10-01T00:00:00Z", "applies_to": "all"})
    assert r.status_code == 201 and r.json()["amount"] == "600.00", r.text
    contract = api("GET", "/v1/subscriptions/1/contract", key="read").json()
    assert (len(contract["overrides"]), contract["coupons"][0]["coupon"]["code"], contract["commitments"][0]["currency"]
            ) == (2, "LAUNCH", "USD")

    api.clock.now = datetime(2026, 10, 10, tzinfo=UTC)
    r = api("POST", "/v1/events", json=requests(60))
    assert r.status_code == 200 and r.json()["accepted"] == 60, r.text
    decision = api("POST", "/v1/quota/check", key="check",
                   json={"customer": "acme", "charge": "premium_requests"}).json()
    # past the 50 included (not 300): overage at $0.05 (not $0.04), $0.50 spent so far
    assert (decision["outcome"], decision["reason"], decision["amount"], decision["spend"]) == (
        "allow", "overage", "0.05", "0.5")

    api.clock.now = datetime(2026, 11, 2, tzinfo=UTC)
    api.app.state.services.invoicing.close(datetime(2026, 11, 1, tzinfo=UTC))
    (invoice,) = [i for i in api("GET", "/v1/invoices", key="read").json()["data"] if i["customer"] == "acme"]
    lines = api("GET", f"/v1/invoices/{invoice['id']}", key="read").json()["lines"]
    # $10 fee + 10 requests past 50 at $0.05 = $10.50; 10% off: -1.05; the term's October share:
    # 600 x 31/365 = 50.96, less the 10.50 billed: a 40.46 true-up
    assert [(ln["kind"], ln["key"], ln["amount"]) for ln in lines] == [
        ("fee", "subscription", "10.00"), ("usage", "premium_requests", "0.00"),
        ("usage", "premium_requests", "0.50"), ("discount", "coupon:LAUNCH", "-1.05"),
        ("commitment", "commitment:1", "40.46")]
    assert lines[0]["description"] == "Monthly subscription"
    assert lines[1]["description"].startswith("Premium requests (contract): 60 used, 50 included")
    assert lines[3]["description"] == "Coupon LAUNCH (10% off the invoice)"
    assert invoice["total"] == "49.91"


@pytest.mark.parametrize("path, body, message", [
    ("/v1/subscriptions/1/overrides", {"overrides": [{"path": "charges/nope/included", "value": None,
                                                      "starts_at": "2026-11-01T00:00:00Z"}]},
     "overrides[0].path: plan copilot-premium@v1 has no charge 'nope'"),
    ("/v1/coupons", {"code": "BAD", "percent": "150", "duration": "once"}, "percent: must be more than 0"),
    ("/v1/subscriptions/1/commitments", {"amount": "0", "starts_at": "2026-11-01T00:00:00Z",
                                         "ends_at": "2027-11-01T00:00:00Z"}, "amount: must be more than 0"),
])
def test_bad_input_is_a_named_422(api, path, body, message):
    r = api("POST", path, json=body)
    assert r.status_code == 422 and r.json()["error"]["code"] == "contract_invalid", r.text
    assert message in r.json()["error"]["message"]


def test_a_customer_key_acts_on_its_own_subscriptions_only(api):
    body = {"overrides": [{"path": "spend_cap", "value": "5", "starts_at": "2026-11-01T00:00:00Z"}]}
    assert api("POST", "/v1/subscriptions/1/overrides", key="globex-admin", json=body).status_code == 403
    assert api("POST", "/v1/subscriptions/2/overrides", key="globex-admin", json=body).status_code == 201
    assert api("POST", "/v1/coupons", key="globex-admin",
               json={"code": "X", "percent": "5", "duration": "forever"}).status_code == 403
    assert api("GET", "/v1/subscriptions/99/contract", key="read").json()["error"]["code"] == "subscription_not_found"


def test_addons_through_the_api(api):
    r = api("POST", "/v1/subscriptions/1/addons", json={"plan": "sso", "at": "2026-10-17T00:00:00Z"})
    assert r.status_code == 201 and r.json()["plan"] == {"id": "sso", "version": 1}, r.text
    addon = r.json()["id"]
    assert api("POST", f"/v1/subscriptions/2/addons/{addon}/end", json={}).status_code == 404  # not globex's add-on
    r = api("POST", f"/v1/subscriptions/1/addons/{addon}/end", json={"at": "2026-10-27T00:00:00Z"})
    assert r.status_code == 200 and r.json()["ended_at"] == "2026-10-27T00:00:00Z"
    r = api("POST", "/v1/subscriptions/1/addons", json={"plan": "copilot-premium"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "contract_invalid"
    assert api("GET", "/v1/subscriptions/1/contract", key="read").json()["addons"][0]["id"] == addon
    api.clock.now = datetime(2026, 11, 2, tzinfo=UTC)
    api.app.state.services.invoicing.close(datetime(2026, 11, 1, tzinfo=UTC))
    (invoice,) = [i for i in api("GET", "/v1/invoices", key="read").json()["data"] if i["customer"] == "acme"]
    lines = api("GET", f"/v1/invoices/{invoice['id']}", key="read").json()["lines"]
    assert [(ln["key"], ln["description"], ln["amount"]) for ln in lines if ln["key"].startswith("addon:")] == [
        ("addon:1:sso", "SSO add-on: sso (prorated 32.26% of the period)", "10.00")]  # 31 x 10/31
