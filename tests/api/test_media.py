"""One media-type rule on every POST route, the fast path included: a JSON body is served
with ``Content-Type: application/json`` (any parameters), ``application/*+json`` or no
Content-Type at all; any other type is 415 ``unsupported_media_type``."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.catalog import Catalog, parse_plan_text
from tests.support.quota import NOW, T0, Clock
from tests.support.summed import CAT as SUMMED_CAT

ADDON = parse_plan_text("plan: addon\nname: Add-on\neffective_from: 2026-01-01T00:00:00Z\n"
                        "fees:\n  - {type: flat, key: a, amount: \"1.00\"}\n")
CAT = Catalog([*SUMMED_CAT.all(), ADDON])  # with a fees-only plan for the add-on routes


def post_routes(app) -> set[str]:
    """Every POST route: those in the OpenAPI schema and those of the fast path."""
    paths = {path for path, ops in app.openapi()["paths"].items() if "post" in ops}
    return paths | {path for method, path in app.fast_routes if method == "POST"}


@pytest.fixture
def api(sqlite_engine):
    app = create_app(sqlite_engine, CAT, clock=Clock(), context_ttl=0, key_cache_ttl=0)
    client = TestClient(app)
    key = create_key(sqlite_engine, "admin")[1]

    def post(path: str, body: dict, content_type: str | None):
        headers = {"Authorization": f"Bearer {key}"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        return client.post(path, content=json.dumps(body).encode(), headers=headers)

    post.app = app
    for cid in ("acme", "c-none", "c-json", "c-charset", "c-plus"):
        assert post("/v1/customers", {"id": cid}, "application/json").status_code == 201
        assert post(f"/v1/customers/{cid}/subscriptions", {"plan": "summed", "at": T0.isoformat()},
                    "application/json").status_code == 201
    return post


def bodies(post, variant: str) -> dict[str, tuple[str, dict]]:
    """A valid request for every POST route (its own customer or reservation per variant)."""
    customer = f"c-{variant}"
    reserve = {"customer": customer, "meter": "units", "quantity": 1}
    rid = post("/v1/quota/reserve", reserve, "application/json").json()["reservation_id"]
    rid2 = post("/v1/quota/reserve", reserve, "application/json").json()["reservation_id"]
    event = {"id": f"e-{variant}", "customer": customer, "type": "request", "timestamp": NOW.isoformat(),
             "properties": {"units": 1}}
    sub = post.app.state.services.accounts.current_subscription(customer, NOW).id
    addon = post(f"/v1/subscriptions/{sub}/addons", {"plan": "addon", "at": T0.isoformat()},
                 "application/json").json()["id"]
    later = (NOW + timedelta(days=40)).isoformat()
    contract = {
        "/v1/subscriptions/{subscription_id}/overrides": (
            f"/v1/subscriptions/{sub}/overrides",
            {"overrides": [{"path": "spend_cap", "value": "5", "starts_at": later}]}),
        "/v1/coupons": ("/v1/coupons", {"code": f"C-{variant}", "percent": "10", "duration": "once"}),
        "/v1/subscriptions/{subscription_id}/coupons": (f"/v1/subscriptions/{sub}/coupons",
                                                        {"code": f"C-{variant}", "at": NOW.isoformat()}),
        "/v1/subscriptions/{subscription_id}/commitments": (
            f"/v1/subscriptions/{sub}/commitments",
            {"amount": "100", "starts_at": later, "ends_at": (NOW + timedelta(days=400)).isoformat()}),
        "/v1/subscriptions/{subscription_id}/addons": (f"/v1/subscriptions/{sub}/addons",
                                                       {"plan": "addon", "at": NOW.isoformat()}),
        "/v1/subscriptions/{subscription_id}/addons/{addon_id}/end": (
            f"/v1/subscriptions/{sub}/addons/{addon}/end", {"at": NOW.isoformat()}),
    }
    return {**contract, "/v1/events": ("/v1/events", {"events": [event]}),
            "/v1/quota/check": ("/v1/quota/check", reserve),
            "/v1/entitlements/check": ("/v1/entitlements/check", {"customer": customer, "feature": "sso"}),
            "/v1/quota/reserve": ("/v1/quota/reserve", reserve),
            "/v1/quota/commit": ("/v1/quota/commit", {"reservation_id": rid}),
            "/v1/quota/release": ("/v1/quota/release", {"reservation_id": rid2}),
            "/v1/customers": ("/v1/customers", {"id": f"new-{variant}"}),
            "/v1/customers/{customer_id}/subscriptions": (f"/v1/customers/new-{variant}/subscriptions",
                                                          {"plan": "summed", "at": T0.isoformat()}),
            "/v1/customers/{customer_id}/seats": (f"/v1/customers/{customer}/seats", {"seats": 2}),
            "/v1/customers/{customer_id}/budgets": (f"/v1/customers/{customer}/budgets",
                                                    {"name": f"b-{variant}", "measure": "cost", "amount": "5"}),
            "/v1/stripe/webhook": ("/v1/stripe/webhook", {"id": "evt_1", "type": "invoice.paid"}),
            "/v1/otlp/v1/traces": ("/v1/otlp/v1/traces", {"resourceSpans": []}),
            **_ledger_writes(post, variant, customer),
            "/v1/webhook_endpoints": ("/v1/webhook_endpoints", {"url": f"https://hooks.example/{variant}"}),
            "/v1/webhook_deliveries/replay": ("/v1/webhook_deliveries/replay", {"events": [f"none-{variant}"]})}


def _ledger_writes(post, variant: str, customer: str) -> dict[str, tuple[str, dict]]:
    """The subscription, credit and invoice writes (``billing.api.subscriptions``, ``credits``,
    ``invoices_routes``): their own customers, subscriptions and September invoices per variant."""
    services = post.app.state.services
    subs = {}
    post("/v1/customers", {"id": f"w0-{variant}"}, "application/json")  # subscribed by the route
    for name in ("w1", "w2", "i1", "i2", "i3"):
        cid = f"{name}-{variant}"
        post("/v1/customers", {"id": cid}, "application/json")
        at = (T0 - timedelta(days=30)).isoformat() if name.startswith("i") else T0.isoformat()
        subs[name] = post("/v1/subscriptions", {"customer": cid, "plan": "summed", "at": at}, "application/json").json()
    services.invoicing.close(T0)
    invoice = {name: services.invoicing.list(f"{name}-{variant}")[0].id for name in ("i1", "i2", "i3")}
    return {
        "/v1/subscriptions": ("/v1/subscriptions", {"customer": f"w0-{variant}", "plan": "summed"}),
        "/v1/subscriptions/{subscription_id}/seats": (f"/v1/subscriptions/{subs['w1']['id']}/seats", {"seats": 3}),
        "/v1/subscriptions/{subscription_id}/change_plan": (f"/v1/subscriptions/{subs['w1']['id']}/change_plan",
                                                             {"plan": "summed"}),
        "/v1/subscriptions/{subscription_id}/cancel": (f"/v1/subscriptions/{subs['w2']['id']}/cancel", {}),
        "/v1/credit_grants": ("/v1/credit_grants", {"customer": customer, "amount": "5"}),
        "/v1/invoices/close": ("/v1/invoices/close", {"as_of": T0.isoformat()}),
        "/v1/invoices/{invoice_id}/pay": (f"/v1/invoices/{invoice['i1']}/pay", {}),
        "/v1/invoices/{invoice_id}/void": (f"/v1/invoices/{invoice['i2']}/void", {}),
        "/v1/invoices/{invoice_id}/mark_uncollectible": (f"/v1/invoices/{invoice['i3']}/mark_uncollectible", {}),
    }


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/jsonx", "json"])
def test_other_media_types_are_415_on_every_post_route(api, content_type):
    routes = bodies(api, "json")
    assert set(routes) == post_routes(api.app)  # a new POST route needs a body here
    for path, body in routes.values():
        r = api(path, body, content_type)
        assert r.status_code == 415, (path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "unsupported_media_type" and "application/json" in r.json()["error"]["message"]


@pytest.mark.parametrize("variant, content_type", [("none", None), ("charset", "application/json; charset=utf-8"),
                                                   ("plus", "application/vnd.billing+json")])
def test_json_without_or_with_any_json_content_type_is_served_everywhere(api, variant, content_type):
    expected = {route: api(path, body, "application/json").status_code
                for route, (path, body) in bodies(api, "json").items()}  # the reference answers
    for route, (path, body) in bodies(api, variant).items():
        r = api(path, body, content_type)
        want = expected[route]
        assert r.status_code == want, (path, content_type, r.text)
        assert r.status_code in (200, 201) or path == "/v1/stripe/webhook", (path, r.text)
