"""POST /v1/entitlements/check over HTTP (SQLite, and PostgreSQL: ``any_engine``): the
features of the customer's plan (the quota's cached context), a metered feature answered by
the quota decision, the check scope, 404 ``customer_not_found``, strict bodies."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from tests.support.quota import T0, Clock, catalog

CAT = catalog()


@pytest.fixture
def api(any_engine):
    accounts = Accounts(any_engine, CAT)
    accounts.create_customer("acme", now=T0)
    accounts.subscribe("acme", "agent-platform", at=T0)
    clock = Clock()
    keys = {"check": create_key(any_engine, "check")[1], "ingest": create_key(any_engine, "ingest")[1],
            "acme": create_key(any_engine, "check", customer="acme")[1],
            "other": create_key(any_engine, "check", customer="other")[1]}
    with TestClient(create_app(any_engine, CAT, clock=clock, context_ttl=60), base_url="http://testserver") as http:
        def ask(body: dict, key: str = "check"):
            return http.post("/v1/entitlements/check", json=body, headers={"Authorization": f"Bearer {keys[key]}"})
        ask.engine, ask.clock, ask.http, ask.keys = any_engine, clock, http, keys
        yield ask


@pytest.mark.parametrize("feature, kind, has, value", [
    ("sso", "boolean", True, True),
    ("audit_log", "boolean", False, False),
    ("max_projects", "static", True, 10),
    ("support", "static", True, "priority"),
    ("gpus", "absent", False, None),
])
def test_static_features_answer_from_the_plan(api, feature, kind, has, value):
    answer = api({"customer": "acme", "feature": feature})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"customer": "acme", "plan": {"id": "agent-platform", "version": 1}, "feature": feature,
                             "kind": kind, "has": has, "value": value, "metered": None, "decision": None}


def test_a_metered_feature_is_the_quota_decision(api):
    first = api({"customer": "acme", "feature": "sandboxes"}).json()
    assert (first["kind"], first["has"], first["metered"]) == ("metered", True, "sandbox")
    assert first["decision"]["outcome"] == "allow" and first["decision"]["remaining"] == {"sandbox_minutes": "600"}
    # the 600 included minutes used: the block policy denies, and so does the entitlement
    event = {"id": "s1", "customer": "acme", "type": "sandbox.session", "timestamp": "2026-10-05T10:00:00Z",
             "properties": {"minutes": 600}}
    assert Ledger(api.engine, CAT, clock=api.clock).record([event]).accepted == 1
    after = api({"customer": "acme", "feature": "sandboxes"}).json()
    assert (after["has"], after["decision"]["outcome"], after["decision"]["reason"]) == (
        False, "deny", "quota_exhausted")
    check = api.http.post("/v1/quota/check", json={"customer": "acme", "charge": "sandbox"},
                          headers={"Authorization": f"Bearer {api.keys['check']}"}).json()
    assert check["outcome"] == after["decision"]["outcome"] and check["spend"] == after["decision"]["spend"]


def test_unknown_customer_scopes_and_strict_bodies(api):
    missing = api({"customer": "nobody", "feature": "sso"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "customer_not_found"
    assert api({"customer": "acme", "feature": "sso"}, key="acme").status_code == 200
    foreign = api({"customer": "acme", "feature": "sso"}, key="other")
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "forbidden"
    assert api({"customer": "acme", "feature": "sso"}, key="ingest").json()["error"]["code"] == "forbidden"
    assert api.http.post("/v1/entitlements/check", json={"customer": "acme", "feature": "sso"}).status_code == 401
    for body in ({"customer": "acme"}, {"customer": "acme", "feature": "sso", "extra": 1},
                 {"customer": "", "feature": "sso"}):
        bad = api(body)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error", body


def test_a_contract_overrides_the_plans_features(api):
    """A contract (``features/<name>`` overrides) grants, changes and withdraws features for
    one customer: the check answers with the effective plan the quota uses."""
    from billing.contracts.service import Contracts

    Contracts(api.engine, CAT).add_overrides(1, [
        {"path": "features/audit_log", "value": True, "starts_at": T0},
        {"path": "features/max_projects", "value": 50, "starts_at": T0},
        {"path": "features/sso", "value": False, "starts_at": T0}], now=T0)
    api.clock.now = api.clock.now.replace(day=11)  # past the cached context's time to live
    got = {f: api({"customer": "acme", "feature": f}).json() for f in ("audit_log", "max_projects", "sso", "support")}
    assert {f: (a["has"], a["value"]) for f, a in got.items()} == {
        "audit_log": (True, True), "max_projects": (True, 50), "sso": (False, False), "support": (True, "priority")}


def test_a_feature_override_the_plan_validator_refuses_is_a_contract_error(api):
    from billing.contracts.service import Contracts
    from billing.errors import BillingError

    with pytest.raises(BillingError) as err:
        Contracts(api.engine, CAT).add_overrides(1, [
            {"path": "features/max_projects", "value": -3, "starts_at": T0}], now=T0)
    assert err.value.code == "contract_invalid" and "features" in str(err.value.message)
