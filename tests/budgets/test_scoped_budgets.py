"""Budgets at every scope over the database, on SQLite and PostgreSQL: created through the
API (validation naming the field, nothing half-created, the unseen-property warning),
counted from the scope's events in the window, and held by reservations so that two
``Quota`` objects racing (two servers' writers) never grant past a hard budget."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal as D

from fastapi.testclient import TestClient
from sqlalchemy import text

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.budgets.service import Budgets
from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from billing.reservations.holds import Quota
from tests.support.budgets import budget_catalog
from tests.support.quota import NOW, T0, Clock

CAT = budget_catalog()


def _customer(engine, cid="acme"):
    acc = Accounts(engine, CAT)
    acc.create_customer(cid, now=T0, timezone="Europe/Paris")
    acc.subscribe(cid, "budgeted", at=T0)


def _events(engine, n, props, start=0):
    Ledger(engine, CAT, clock=Clock()).record([
        {"id": f"e{start + i}", "customer": "acme", "type": "request", "timestamp": NOW.isoformat(),
         "properties": {"output_tokens": 10, **props}} for i in range(n)])


def test_the_api_creates_lists_and_deletes_budgets_and_names_bad_fields(any_engine):
    _customer(any_engine)
    _events(any_engine, 2, {"team": "research"})
    app = create_app(any_engine, CAT, clock=Clock(), context_ttl=0, key_cache_ttl=0)
    headers = {"Authorization": f"Bearer {create_key(any_engine, 'admin')[1]}"}
    with TestClient(app, headers=headers) as client:
        url = "/v1/customers/acme/budgets"
        bad = client.post(url, json={"name": "x", "measure": "units", "meter": "nope", "amount": "5"})
        assert bad.status_code == 422 and bad.json()["error"]["details"]["problems"][0].startswith("meter:")
        assert bad.json()["error"]["param"] == "meter"
        bad = client.post(url, json={"name": "x", "measure": "cost", "amount": "5", "timezone": "Nowhere/Land"})
        assert bad.status_code == 422 and "timezone" in bad.json()["error"]["message"]
        assert client.get(url).json()["budgets"] == []  # nothing half-created
        ok = client.post(url, json={"name": "research", "measure": "units", "meter": "requests", "amount": "5",
                                    "window": "daily", "enforcement": "hard",
                                    "scope": {"property": "team", "value": "research"}})
        assert ok.status_code == 201 and "warnings" not in ok.json()
        warned = client.post(url, json={"name": "by-app", "measure": "cost", "amount": "5",
                                        "scope": {"property": "application", "value": "bot"}})
        assert warned.status_code == 201 and warned.json()["warnings"][0]["code"] == "property_not_seen"
        assert client.post(url, json={"name": "research", "measure": "cost", "amount": "1"}).status_code == 409
        assert [b["name"] for b in client.get(url).json()["budgets"]] == ["research", "by-app"]
        body = {"customer": "acme", "meter": "requests", "quantity": "3", "properties": {"team": "research"}}
        d = client.post("/v1/quota/check", json=body).json()
        assert (d["outcome"], d["budget"]["name"], d["budget"]["remaining"]) == ("allow", "research", "3")
        d = client.post("/v1/quota/check", json={**body, "quantity": "4"}).json()
        assert (d["outcome"], d["reason"]) == ("deny", "budget_exceeded")
        d = client.post("/v1/quota/check", json={**body, "properties": {"team": "ops"}, "quantity": "4"}).json()
        assert d["outcome"] == "allow" and "budget" not in d
        assert client.delete(f"{url}/{ok.json()['id']}").status_code == 200
        assert client.delete(f"{url}/{ok.json()['id']}").json()["error"]["code"] == "budget_not_found"
        d = client.post("/v1/quota/check", json={**body, "quantity": "4"}).json()
        assert d["outcome"] == "allow"


def test_two_quotas_racing_never_grant_past_a_hard_scoped_budget(any_engine):
    _customer(any_engine)
    _events(any_engine, 3, {"team": "research", "tags": ["beta"], "cost": "0.5"})
    _events(any_engine, 5, {"team": "ops", "tags": ["alpha"], "cost": "0.5"}, start=100)  # not counted
    Budgets(any_engine, CAT, clock=Clock()).create("acme", {
        "name": "beta-cost", "measure": "cost", "amount": "10", "window": "weekly", "enforcement": "hard",
        "scope": "tag=beta"})
    Budgets(any_engine, CAT, clock=Clock()).create("acme", {
        "name": "research-units", "measure": "units", "meter": "requests", "amount": "20", "window": "daily",
        "enforcement": "hard", "scope": {"property": "team", "value": "research"}})
    quotas = [Quota(any_engine, CAT, clock=Clock(), writers=2) for _ in range(2)]
    props = {"team": "research", "tags": ["beta"]}

    def one(i: int):
        return quotas[i % 2].reserve("acme", "requests", cost="0.25", ttl=600, properties=props)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(40)))
    granted = [r for r in results if r.granted]
    assert len(granted) == 17  # 3 research events + 17 held = the 20 units; cost 1.5 + 17 x 0.25 < 10
    assert all(r.decision.reason == "budget_exceeded" for r in results if not r.granted)
    for r in granted[:5]:  # commits turn holds into events: still counted, nothing more fits
        quotas[0].commit(r.id, {"type": "request", "properties": {"output_tokens": 1, **props}})
    d = quotas[1].check("acme", "requests", properties=props)
    assert (d.outcome, d.budget["name"], d.budget["used"]) == ("deny", "research-units", "20")
    assert quotas[1].check("acme", "requests", properties={"team": "ops"}).outcome == "allow"
    # the tag's cost: its 3 events read by SQL ($1.50), the 5 commits read since (cost 0), 12 live holds
    d = quotas[0].check("acme", "requests", properties={"tags": ["beta"]})
    assert (d.budget["name"], D(d.budget["used"])) == ("beta-cost", D("1.5") + 12 * D("0.25"))
    for q in quotas:
        q.close()


def test_a_soft_budget_alerts_once_per_window(any_engine):
    _customer(any_engine)
    Budgets(any_engine, CAT, clock=Clock()).create("acme", {"name": "soft", "measure": "cost", "amount": "1",
                                                            "window": "daily", "scope": "user=ann"})
    quota = Quota(any_engine, CAT, clock=Clock())
    results = [quota.reserve("acme", "requests", cost="0.4", properties={"user": "ann"}) for _ in range(6)]
    assert all(r.granted for r in results)
    with any_engine.connect() as conn:
        rows = conn.execute(text("SELECT subject, value FROM budget_alert WHERE customer_id = 'acme'")).all()
        queued = conn.execute(text("SELECT COUNT(*) FROM webhook_outbox WHERE customer_id = 'acme' AND type = 'alert.triggered'")).scalar()
    assert [(s, D(v)) for s, v in rows] == [("budget:1", D("1.2"))] and queued == 1
    quota.close()
