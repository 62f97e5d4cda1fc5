"""Alerts fire once per crossing, never once per event or call: 10,000 events past a
threshold make one delivery; a customer denied for an exhausted allowance again and again
is one ``quota.exhausted``; a task past its cost guard is one ``task_guard`` alert per task;
and issue 15's whale ends with one alert, delivered and signed (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from decimal import Decimal as D

from billing.alerts.delivery import WebhookDispatcher
from billing.alerts.endpoints import Endpoints
from billing.alerts.outbox import Outbox
from billing.alerts.signing import verify
from billing.catalog import Catalog, parse_plan_text
from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from billing.reservations.holds import Quota
from tests.support.guards import COST_RACE_PLAN, EXPENSIVE, guarded_catalog
from tests.support.quota import NOW, T0, Clock, catalog
from tests.support.webhooks import Receiver

ONE_THRESHOLD = """
plan: one-threshold
name: One alert threshold
effective_from: 2026-01-01T00:00:00Z
fees:
  - {type: flat, key: base, amount: 10}
meters:
  - {key: requests, event_type: request, aggregation: count}
charges:
  - key: requests
    meter: requests
    included: {pooled: 100}
    price: {model: per_unit, unit_price: "0.01"}
budget_alerts:
  thresholds_percent: [80]
"""
TASK_PLAN = COST_RACE_PLAN.replace("cost_cap: {amount: 25, on_breach: {policy: deny}}",
                                   "task_cost: {amount: 5, on_breach: {policy: alert}}") + \
    "agent_limits: {max_cost: 8}\n"


def _events(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"r{i}", "customer": "acme", "type": "request", "timestamp": NOW.isoformat()}
            for i in range(start, start + n)]


def test_ten_thousand_events_past_a_threshold_are_one_delivery(any_engine):
    cat = Catalog([parse_plan_text(ONE_THRESHOLD, "one.yaml")])
    acc = Accounts(any_engine, cat)
    acc.create_customer("acme", now=T0)
    acc.subscribe("acme", "one-threshold", at=T0)
    ledger = Ledger(any_engine, cat, clock=Clock())
    ledger.record(_events(79))
    assert Outbox(any_engine).rows(type_="alert.triggered") == []
    for start in range(79, 79 + 10_000, 500):  # 10,000 events past 80, in 20 writes, each evaluating
        ledger.record(_events(500, start))
    with Receiver() as rx:
        ep = Endpoints(any_engine).create(rx.url(), event_types=["alert.triggered"], now=NOW)
        d = WebhookDispatcher(Outbox(any_engine, clock=Clock()))
        assert d.run_once()["delivered"] == 1
        assert d.run_once()["delivered"] == 0
    (headers, body), = rx.at("/hooks")
    assert verify(ep["secret"], body, headers, now=NOW.timestamp())
    data = json.loads(body)["data"]
    assert (data["rule"], data["subject"], data["threshold_percent"]) == ("threshold", "charge:requests:included",
                                                                          "80")


def test_an_exhausted_allowance_is_one_quota_exhausted_per_period(any_engine):
    cat = catalog()
    acc = Accounts(any_engine, cat)
    acc.create_customer("acme", now=T0)
    acc.subscribe("acme", "blocky", at=T0)
    clock = Clock()
    q = Quota(any_engine, cat, clock=clock)
    q.ledger.record(_events(100))
    assert Outbox(any_engine).rows(type_="quota.exhausted") == []
    for _ in range(200):
        assert q.check("acme", "requests").reason == "quota_exhausted"
    for _ in range(20):
        assert not q.reserve("acme", "requests").granted
    q.close()
    other = Quota(any_engine, cat, clock=clock)  # another server: its first deny writes, the outbox keeps one
    assert other.check("acme", "requests").reason == "quota_exhausted"
    other.close()
    (row,) = Outbox(any_engine).rows(type_="quota.exhausted")
    body = json.loads(row["payload"])
    assert body["customer"] == "acme" and body["data"]["reason"] == "quota_exhausted"
    assert body["data"]["charges"] == ["requests"] and body["data"]["period"]["start"].startswith("2026-10-01")


def test_a_task_past_its_cost_guard_alerts_once_per_task(any_engine):
    cat = Catalog([parse_plan_text(TASK_PLAN, "t.yaml")])
    acc = Accounts(any_engine, cat)
    acc.create_customer("acme", now=T0)
    acc.subscribe("acme", "cost-capped", at=T0)
    q = Quota(any_engine, cat, clock=Clock())
    assert q.check("acme", "requests", task="t1", cost=D(4)).guard is None
    for _ in range(30):
        d = q.check("acme", "requests", task="t1", cost=D(6))
        assert (d.outcome, d.guard) == ("allow", "task_cost")  # the alert policy: allowed, reported
    q.reserve("acme", "requests", task="t2", cost=D(6))
    q.reserve("acme", "requests", task="t2", cost=D(6))
    q.close()
    rows = Outbox(any_engine).rows(type_="alert.triggered")
    got = sorted((json.loads(r["payload"])["data"]["rule"], json.loads(r["payload"])["data"]["task"]) for r in rows)
    assert got == [("task_guard", "t1"), ("task_guard", "t2")]


def test_the_whale_ends_with_one_alert_delivered_and_signed(any_engine):
    cat = guarded_catalog()
    acc = Accounts(any_engine, cat)
    acc.create_customer("whale", now=T0)
    acc.subscribe("whale", "flat-guarded", at=T0)
    q = Quota(any_engine, cat, clock=Clock())
    outcomes = []
    for i in range(60):
        r = q.reserve("whale", "calls", model=EXPENSIVE, tokens=200_000)
        outcomes.append((r.decision.outcome, r.decision.guard))
        if not r.granted:
            if outcomes.count(("deny", "cost_cap")) == 3:
                break
            continue
        q.commit(r.id, {"id": f"c{i}", "properties": {"model": r.decision.lane.model, "input_tokens": 100_000,
                                                      "output_tokens": 100_000}})
    q.close()
    assert ("downgrade", "margin_floor") in outcomes and outcomes[-1] == ("deny", "cost_cap")
    with Receiver() as rx:
        ep = Endpoints(any_engine).create(rx.url(), event_types=["alert.triggered", "quota.exhausted"], now=NOW)
        assert WebhookDispatcher(Outbox(any_engine, clock=Clock())).run_once()["delivered"] == 1
    (headers, body), = rx.at("/hooks")
    assert verify(ep["secret"], body, headers, now=NOW.timestamp())
    alert = json.loads(body)
    assert alert["type"] == "alert.triggered" and alert["customer"] == "whale"
    assert (alert["data"]["rule"], alert["data"]["subject"]) == ("whale", "cost_guard:margin_floor")
    assert D(alert["data"]["value"]) > D(alert["data"]["limit"])
