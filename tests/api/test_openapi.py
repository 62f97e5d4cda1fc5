"""The OpenAPI document is a contract: it passes an OpenAPI validator, every operation
declares its request, its answers (a success model and its errors, in the error body of
``billing.api.errors``) and its security, and real answers of every route conform to it, on
SQLite and PostgreSQL. Errors carry Stripe's shape with the request id; unknown query
parameters are refused naming the parameter."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from sqlalchemy import create_engine

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.api.openapi import PUBLIC
from billing.invoicing.service import Invoicing
from tests.support.errors import error_of
from tests.support.quota import NOW, T0, Clock, catalog

CAT = catalog()
DOC = create_app(engine=create_engine("sqlite://"), catalog=CAT).openapi()
ROOT = Path(__file__).resolve().parents[2]


def test_the_document_passes_an_openapi_validator():
    validate(DOC)
    assert DOC["openapi"].startswith("3.1")


def _operations():
    for path, operations in DOC["paths"].items():
        for method, operation in operations.items():
            yield method, path, operation


def test_every_operation_declares_its_answers_and_its_security():
    assert len(list(_operations())) >= 30
    for method, path, op in _operations():
        where = f"{method.upper()} {path}"
        success = [s for s in op["responses"] if s.startswith("2")]
        assert success, where
        for status in success:
            content = op["responses"][status].get("content")
            assert content and all(media.get("schema") for media in content.values()), (where, status)
        errors = [s for s in op["responses"] if s[0] in "45"]
        assert {"400", "500", "503"} <= set(errors), where
        for status in errors:
            schema = op["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (where, status)
            assert op["responses"][status]["description"].startswith("codes: `"), (where, status)
        if method in ("post", "put", "patch"):
            assert "requestBody" in op and {"413", "415", "422"} <= set(errors), where
            media = op["requestBody"]["content"]["application/json"]
            assert "example" in media or _resolve(media["schema"]).get("examples"), where
        if (method, path) in PUBLIC:
            assert "security" not in op and "401" not in errors, where
        else:
            assert op["security"] == [{"bearerAuth": []}, {"apiKeyAuth": []}], where
            assert {"401", "403"} <= set(errors), where
    schemes = DOC["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["apiKeyAuth"] == {**schemes["apiKeyAuth"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert "HTTPValidationError" not in DOC["components"]["schemas"]


def test_the_event_json_schema_is_a_component_of_the_events_body():
    shipped = json.loads((ROOT / "billing" / "schemas" / "usage_event.schema.json").read_text())
    component = DOC["components"]["schemas"]["UsageEvent"]
    assert component["properties"].keys() == shipped["properties"].keys()
    assert component["required"] == shipped["required"] and component["examples"] == shipped["examples"]
    assert "$ref" not in json.dumps(component).replace('"$ref": "#/components/schemas/UsageEvent', "")
    body = DOC["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/UsageEvent"} in [
        alt.get("items") or alt.get("properties", {}).get("events", {}).get("items") for alt in body["anyOf"]]
    # the document's copy accepts and refuses what the file does
    validator = _validator({"$ref": "#/components/schemas/UsageEvent"})
    good = shipped["examples"][0]
    assert validator.is_valid(good) and not validator.is_valid({**good, "quantity": -1})
    assert not validator.is_valid({k: v for k, v in good.items() if k != "id"})


def _resolve(schema: dict) -> dict:
    ref = schema.get("$ref", "")
    return DOC["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def _validator(schema: dict) -> Draft202012Validator:
    """``schema`` of the document, its ``#/components/...`` references resolved in it."""
    return Draft202012Validator({**schema, "components": DOC["components"]})


def conforms(method: str, template: str, response) -> dict | str:
    """The answer, once its status is declared for the operation and its body matches the
    declared schema (JSON bodies)."""
    op = DOC["paths"][template][method.lower()]
    declared = op["responses"].get(str(response.status_code))
    assert declared is not None, (method, template, response.status_code, response.text[:300])
    media = response.headers["content-type"].split(";")[0]
    content = declared["content"]
    schema = next((v["schema"] for k, v in content.items() if k.split(";")[0] == media), None)
    assert schema is not None, (method, template, media, list(content))
    if media != "application/json":
        return response.text
    body = response.json()
    errors = sorted(_validator(schema).iter_errors(body), key=lambda e: list(e.path))
    assert not errors, (method, template, response.status_code, [f"{list(e.path)}: {e.message}" for e in errors[:5]])
    if response.status_code >= 400:
        assert error_of(body)["request_id"] == response.headers["x-request-id"]
    return body


@pytest.fixture
def api(engine):
    clock = Clock()
    app = create_app(engine, CAT, clock=clock, context_ttl=0, key_cache_ttl=0)
    keys = {scope: create_key(engine, scope)[1] for scope in ("ingest", "check", "read", "admin")}
    client = TestClient(app)

    def call(method: str, template: str, path: str | None = None, key: str | None = "admin", **kw):
        headers = {"Authorization": f"Bearer {keys[key]}"} if key else {}
        headers.update(kw.pop("headers", {}))
        response = client.request(method, path or template, headers=headers, **kw)
        return response, conforms(method, template, response)

    call.engine, call.clock, call.keys, call.client = engine, clock, keys, client
    return call


def test_real_answers_of_every_route_conform_to_the_document(api):
    """Each route called as an app would, its answers (successes and errors) checked against
    the document: 2xx, 4xx and the error body alike."""
    seen: set[tuple[str, str]] = set()

    def call(method, template, path=None, status=200, **kw):
        response, body = api(method, template, path, **kw)
        assert response.status_code == status, (method, path or template, response.status_code, response.text[:300])
        seen.add((method.lower(), template))
        return body

    call("GET", "/healthz", key=None)
    call("GET", "/metrics", key=None)
    call("POST", "/v1/customers", json={"id": "acme", "name": "Acme", "timezone": "Europe/Paris"}, status=201)
    call("POST", "/v1/customers/{customer_id}/subscriptions", "/v1/customers/acme/subscriptions",
         json={"plan": "blocky", "at": T0.isoformat(), "seats": 2}, status=201)
    sub = call("GET", "/v1/customers/{customer_id}", "/v1/customers/acme")["subscription"]
    call("GET", "/v1/customers/{customer_id}", "/v1/customers/nobody", status=404)
    call("POST", "/v1/customers/{customer_id}/seats", "/v1/customers/acme/seats", json={"seats": 3})
    at = (NOW - timedelta(hours=1)).isoformat()
    events = [{"id": f"e{i}", "customer": "acme", "type": "request", "timestamp": at, "properties": {}} for i in range(3)]
    events.append({"id": "bad", "customer": "acme", "type": "request", "timestamp": at, "quantity": -1})
    out = call("POST", "/v1/events", json={"events": events})
    assert [r["status"] for r in out["results"]] == ["accepted"] * 3 + ["rejected"]
    call("POST", "/v1/events", json={"events": "nope"}, status=422)
    call("POST", "/v1/quota/check", json={"customer": "acme", "meter": "requests"})
    call("POST", "/v1/quota/check", json={"customer": "acme"}, status=422)
    held = call("POST", "/v1/quota/reserve", json={"customer": "acme", "meter": "requests", "request_id": "r1"})
    call("POST", "/v1/quota/commit", json={"reservation_id": held["reservation_id"]})
    other = call("POST", "/v1/quota/reserve", json={"customer": "acme", "meter": "requests", "request_id": "r2"})
    call("POST", "/v1/quota/release", json={"reservation_id": other["reservation_id"]})
    call("POST", "/v1/quota/release", json={"reservation_id": "rsv_unknown"}, status=404)
    call("POST", "/v1/entitlements/check", json={"customer": "acme", "feature": "sso"})
    call("GET", "/v1/customers/{customer_id}/usage", "/v1/customers/acme/usage")
    call("GET", "/v1/customers/{customer_id}/metering", "/v1/customers/acme/metering")
    call("GET", "/v1/events/unpriced", params={"customer": "acme"})
    call("GET", "/v1/quota/metrics")
    api.clock.now = T0 + timedelta(days=40)
    Invoicing(api.engine, CAT, clock=api.clock).close(T0 + timedelta(days=40))
    invoices = call("GET", "/v1/invoices", params={"customer": "acme"})["data"]
    assert invoices
    call("GET", "/v1/invoices/{invoice_id}", f"/v1/invoices/{invoices[0]['id']}")
    call("GET", "/v1/invoices/{invoice_id}", "/v1/invoices/999999", status=404)
    call("GET", "/v1/plans")
    call("GET", "/v1/plans/{plan_id}", "/v1/plans/blocky")
    spare = create_key(api.engine, "read", name="spare")[0]
    assert spare in {k["id"] for k in call("GET", "/v1/keys")["keys"]}
    call("DELETE", "/v1/keys/{key_id}", f"/v1/keys/{spare}")
    call("DELETE", "/v1/keys/{key_id}", "/v1/keys/000000000000", status=404)
    call("GET", "/v1/subscriptions/{subscription_id}/contract", f"/v1/subscriptions/{sub['id']}/contract")
    call("POST", "/v1/otlp/v1/traces", json={"resourceSpans": []})
    call("GET", "/reports/margins", params={"period": "2026-10", "format": "json"})
    call("POST", "/v1/stripe/webhook", key=None, content=b"{}", status=503)  # no secret configured
    call("GET", "/v1/plans", key=None, status=401)
    call("GET", "/v1/plans", key="ingest", status=403)
    assert len(seen) >= 24


def test_either_security_scheme_authenticates(api):
    """What the Authorize button of ``/docs`` sends, with either scheme, is accepted."""
    served = api.client.get("/openapi.json").json()
    assert served["components"]["securitySchemes"] == DOC["components"]["securitySchemes"]
    assert served["paths"]["/v1/plans"]["get"]["security"] == [{"bearerAuth": []}, {"apiKeyAuth": []}]
    assert "/openapi.json" in api.client.get("/docs").text
    key = api.keys["read"]
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        response, _ = api("GET", "/v1/plans", key=None, headers=headers)
        assert response.status_code == 200, response.text
    response, body = api("GET", "/v1/plans", key=None, headers={"X-Request-Id": "trace-42"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert error_of(body) == {"type": "authentication_error", "code": "unauthenticated", "param": None,
                              "message": "missing API key (Authorization: Bearer <key>)", "request_id": "trace-42"}


@pytest.mark.parametrize("method, template, path, kwargs, param", [
    ("GET", "/v1/invoices", None, {"params": {"customer": "acme", "custmer": "acme"}}, "custmer"),  # a typo
    ("GET", "/v1/plans", None, {"params": {"limit": "5"}}, "limit"),
    ("POST", "/v1/quota/check", "/v1/quota/check?dry=1", {"json": {"customer": "acme", "meter": "requests"}},
     "dry"),  # the fast path
    ("GET", "/healthz", "/healthz?x", {"key": None}, "x"),
])
def test_an_unknown_query_parameter_is_a_400_naming_it(api, method, template, path, kwargs, param):
    response, body = api(method, template, path, **kwargs)
    assert response.status_code == 400, response.text
    error = error_of(body)
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "parameter_unknown", param)


def test_validation_errors_name_the_param(api):
    response, body = api("GET", "/v1/events/unpriced", params={"limit": "5000"})
    assert response.status_code == 422 and error_of(body)["param"] == "limit"
    response, body = api("POST", "/v1/quota/check", json={"customer": "acme", "meter": "requests", "quantity": -1})
    assert response.status_code == 422 and error_of(body)["param"] == "quantity"
    response, body = api("POST", "/v1/customers", json={"id": "acme", "timezone": 5})
    error = error_of(body)
    assert response.status_code == 422 and error["param"] == "timezone" and error["details"][0]["path"] == "timezone"


def test_the_readme_error_table_is_the_error_codes():
    """README "Errors": one row per ``ErrorCode``, with the status and Stripe type the API gives it."""
    from billing.api.errors import status_for, type_for
    from billing.errors import ErrorCode

    text = (ROOT / "README.md").read_text()
    section = text.split("### Errors", 1)[1].split("\n#", 1)[0]
    rows = [[cell.strip().strip("`") for cell in line.strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| `")]
    assert [row[0] for row in rows] == [code.value for code in ErrorCode]
    for code, status, kind, meaning in rows:
        assert (int(status), kind) == (status_for(code), type_for(code)), code
        assert meaning, code


def test_every_example_in_the_document_is_valid_against_its_schema():
    checked = 0
    for name, schema in DOC["components"]["schemas"].items():
        for example in schema.get("examples", []):
            errors = list(_validator({"$ref": f"#/components/schemas/{name}"}).iter_errors(example))
            assert not errors, (name, [e.message for e in errors[:3]])
            checked += 1
    for method, path, op in _operations():
        bodies = [op.get("requestBody", {})] + list(op["responses"].values())
        for part in bodies:
            for media in part.get("content", {}).values():
                if "example" in media and "schema" in media:
                    errors = list(_validator(media["schema"]).iter_errors(media["example"]))
                    assert not errors, (method, path, [e.message for e in errors[:3]])
                    checked += 1
    assert checked > 100


def test_webhook_and_budget_answers_conform_to_the_document(api):
    """The routes merged from the webhooks and budgets branches: successes (with a delivery
    and its attempts in the log) and their errors, each against the document."""
    from billing.alerts.delivery import WebhookDispatcher
    from billing.alerts.events import enqueue_event
    from billing.alerts.outbox import Outbox
    from tests.support.webhooks import Receiver

    def call(method, template, path=None, status=200, **kw):
        response, body = api(method, template, path, **kw)
        assert response.status_code == status, (method, path or template, response.status_code, response.text[:300])
        return body

    eps, one = "/v1/webhook_endpoints", "/v1/webhook_endpoints/{endpoint_id}"
    with Receiver([500]) as rx:
        made = call("POST", eps, json={"url": rx.url(), "event_types": ["invoice.paid"]})
        assert made["secret"].startswith("whsec_")
        call("POST", eps, json={"url": "ftp://x.example"}, status=422)
        call("POST", eps, json={"url": "https://h.example"}, key="read", status=403)
        assert call("GET", eps, params={"limit": 1})["data"][0]["id"] == made["id"]
        call("GET", one, f"{eps}/{made['id']}")
        call("GET", one, f"{eps}/we_missing", status=404)
        call("GET", one + "/secret", f"{eps}/{made['id']}/secret")
        call("PATCH", one, f"{eps}/{made['id']}", json={"description": "finance", "rotate_secret": True})
        call("PATCH", one, f"{eps}/{made['id']}", json={"status": "paused"}, status=422)
        with api.engine.begin() as conn:
            enqueue_event(conn, "invoice.paid", "inv_1", "acme", {"invoice": {"id": "inv_1"}}, NOW)
        WebhookDispatcher(Outbox(api.engine, clock=api.clock), base_delay=3600).run_once()
    (row,) = call("GET", "/v1/webhook_deliveries")["data"]
    assert row["log"][0]["status_code"] == 500
    assert call("POST", "/v1/webhook_deliveries/replay", json={"events": ["invoice.paid:inv_1"]}) == {"replayed": 1}
    call("POST", "/v1/webhook_deliveries/replay", json={}, status=422)
    call("POST", "/v1/webhook_deliveries/replay", json={"since": T0.isoformat(), "endpoint": "we_x"}, status=404)
    call("DELETE", one, f"{eps}/{made['id']}")

    budgets = "/v1/customers/{customer_id}/budgets"
    call("POST", "/v1/customers", json={"id": "acme", "name": "Acme", "timezone": "Europe/Paris"}, status=201)
    body = {"name": "research", "measure": "cost", "amount": "50", "window": "daily", "enforcement": "hard",
            "scope": {"property": "team", "value": "research"}}
    created = call("POST", budgets, budgets.format(customer_id="acme"), json=body, status=201)
    assert created["warnings"][0]["code"] == "property_not_seen"
    call("POST", budgets, budgets.format(customer_id="acme"), json=body, status=409)
    bad = call("POST", budgets, budgets.format(customer_id="acme"), json={**body, "amount": "-1"}, status=422)
    assert error_of(bad)["param"] == "amount"
    call("POST", budgets, budgets.format(customer_id="nobody"), json=body, status=404)
    assert [b["id"] for b in call("GET", budgets, budgets.format(customer_id="acme"))["budgets"]] == [created["id"]]
    call("GET", budgets, budgets.format(customer_id="nobody"), status=404)
    gone = budgets + "/{budget_id}"
    call("DELETE", gone, f"/v1/customers/acme/budgets/{created['id']}")
    call("DELETE", gone, f"/v1/customers/acme/budgets/{created['id']}", status=404)
