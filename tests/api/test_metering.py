"""GET /v1/customers/{id}/metering: the customer's plan's meters, for keys of scope read or
check (restricted to that customer, when the key is)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.ledger.accounts import Accounts
from tests.support.quota import T0, catalog

CAT = catalog()


def test_metering_route_scopes(sqlite_engine):
    Accounts(sqlite_engine, CAT).create_customer("acme", now=T0)
    Accounts(sqlite_engine, CAT).subscribe("acme", "cursor-pro", at=T0)
    http = TestClient(create_app(sqlite_engine, CAT, context_ttl=0), base_url="http://testserver")
    for scope, customer, status in (("check", None, 200), ("read", None, 200), ("ingest", None, 403),
                                    ("check", "acme", 200), ("check", "other", 403)):
        _, key = create_key(sqlite_engine, scope, customer=customer)
        answer = http.get("/v1/customers/acme/metering", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == status, (scope, customer, answer.text)
    assert http.get("/v1/customers/acme/metering").status_code == 401


def test_metering_answer(sqlite_engine):
    acc = Accounts(sqlite_engine, CAT)
    acc.create_customer("acme", now=T0)
    acc.subscribe("acme", "token-api", at=T0)
    http = TestClient(create_app(sqlite_engine, CAT, context_ttl=0), base_url="http://testserver")
    _, key = create_key(sqlite_engine, "check")
    answer = http.get("/v1/customers/acme/metering", headers={"Authorization": f"Bearer {key}"}).json()
    assert answer["plan"] == {"id": "token-api", "version": 1} and answer["task_property"] == "task"
    assert [(m["key"], m["event_type"], m["aggregation"], m["property"]) for m in answer["meters"]] == [
        ("llm_calls", "llm.call", "count", None), ("input_tokens", "llm.call", "sum", "input_tokens")]
    assert answer["charges"] == [{"key": "inference", "meter": "llm_calls"}]
    missing = http.get("/v1/customers/nobody/metering", headers={"Authorization": f"Bearer {key}"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "customer_not_found"
