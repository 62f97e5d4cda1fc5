"""Forecast alerts: at the run rate the allowance is used up before the period ends ->
one ``alert.triggered`` (rule ``forecast``) per customer, period and subject, with the
forecast's own figures; not on plans without alerts, nor early in the period; through
``billing worker``'s ``alerts`` job (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from datetime import timedelta

from billing.alerts.forecast import forecast_alerts
from billing.alerts.outbox import Outbox
from billing.config import Settings
from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from billing.reports.forecast import forecast
from billing.worker.jobs import JobContext
from billing.worker.runner import Worker
from billing.worker.schedule import DEFAULT_INTERVALS
from tests.support.quota import NOW, T0, Clock, catalog

CAT = catalog()


def _messages(customer: str, n: int) -> list[dict]:
    return [{"id": f"{customer}-{i}", "customer": customer, "type": "llm.call",
             "timestamp": (NOW - timedelta(hours=1)).isoformat(), "properties": {"feature": "support-chat"}}
            for i in range(n)]


def test_a_projected_crossing_alerts_once(any_engine):
    acc = Accounts(any_engine, CAT)
    for customer, plan in (("busy", "support-chatbot"), ("calm", "support-chatbot"), ("noalerts", "team-advance")):
        acc.create_customer(customer, now=T0)
        acc.subscribe(customer, plan, at=T0)
    ledger = Ledger(any_engine, CAT, clock=Clock(), alerts=False)
    ledger.record(_messages("busy", 60))  # 60 of 100 at 30% of October: about 196 projected
    ledger.record(_messages("calm", 20))  # about 65 projected: no crossing
    ledger.record([{"id": f"b{i}", "customer": "noalerts", "type": "assistant.request",
                    "timestamp": (NOW - timedelta(hours=1)).isoformat()}
                   for i in range(60)])  # projected past its 100 too, but the plan has no alerts
    expected = [(r.customer, c) for r in forecast(any_engine, CAT, NOW) for c in r.crossings
                if c.threshold == 100 and not c.reached_now]
    assert {(cust, c.subject) for cust, c in expected} == {("busy", "charge:messages:included"),
                                                           ("noalerts", "charge:requests:included")}
    assert forecast_alerts(any_engine, CAT, T0 + timedelta(days=2)) == {"customers": 3, "crossings": 0, "alerts": 0}
    assert forecast_alerts(any_engine, CAT, NOW)["alerts"] == 1
    assert forecast_alerts(any_engine, CAT, NOW + timedelta(hours=1))["alerts"] == 0  # the same crossing
    (row,) = Outbox(any_engine).rows(type_="alert.triggered")
    body = json.loads(row["payload"])
    (crossing,) = [c for cust, c in expected if cust == "busy"]
    assert body["customer"] == "busy" and body["data"]["rule"] == "forecast"
    assert body["data"]["subject"] == "charge:messages:included" and body["data"]["limit"] == "100"
    assert body["data"]["at"] == crossing.to_json()["at"] and body["data"]["at"] < body["data"]["period"]["end"]
    # the worker's alerts job runs the same rule
    records: list[dict] = []
    ctx = JobContext(any_engine, CAT, Settings(), clock=lambda: NOW)
    Worker(ctx, ["alerts"], DEFAULT_INTERVALS, emit=records.append).run_once()
    assert records[0]["status"] == "ok" and records[0]["result"]["crossings"] == 1
    assert records[0]["result"]["alerts"] == 0
    ctx.close()


def _forecast_rows(engine) -> int:
    return len(Outbox(engine).rows(type_="alert.triggered"))


def test_each_run_forecasts_only_the_customers_changed_since_and_misses_no_crossing(any_engine):
    acc = Accounts(any_engine, CAT)
    for customer in ("busy", "calm", "idle"):
        acc.create_customer(customer, now=T0)
        acc.subscribe(customer, "support-chatbot", at=T0)
    ledger = Ledger(any_engine, CAT, clock=Clock(), alerts=False)
    assert ledger.record(_messages("busy", 20) + _messages("calm", 20)).accepted == 40  # ~65 projected: no crossing
    runs = [forecast_alerts(any_engine, CAT, NOW + timedelta(minutes=m)) for m in (0, 1, 2)]
    # everyone; the overlap run (the subscriptions' creation is queued: all three); then nobody changed
    assert [r["customers"] for r in runs] == [3, 3, 0]
    assert _forecast_rows(any_engine) == 0
    # the crossing happens between two runs: busy sends 40 more (60 of 100 at 30%: about 196 projected)
    assert ledger.record([{**m, "id": f"more-{m['id']}"} for m in _messages("busy", 40)]).accepted == 40
    after = [forecast_alerts(any_engine, CAT, NOW + timedelta(minutes=m)) for m in (3, 4, 5)]
    assert [(r["customers"], r["crossings"], r["alerts"]) for r in after] == [(1, 1, 1), (1, 1, 0), (0, 0, 0)]
    assert _forecast_rows(any_engine) == 1  # exactly once
    # a plan change is a change: that customer alone is forecast again
    acc.change_plan("idle", "team", at=NOW)
    again = [forecast_alerts(any_engine, CAT, NOW + timedelta(minutes=m))["customers"] for m in (6, 7, 8)]
    assert again == [1, 1, 0]  # (the second: the overlap run)
    ledger.close()


def test_the_min_elapsed_gate_opening_between_runs_is_a_change(any_engine):
    acc = Accounts(any_engine, CAT)
    acc.create_customer("early", now=T0)
    acc.subscribe("early", "support-chatbot", at=T0)
    early = T0 + timedelta(days=2)  # about 6 % of October: too early to alert
    ledger = Ledger(any_engine, CAT, clock=Clock(early), alerts=False)
    assert ledger.record([{"id": f"e{i}", "customer": "early", "type": "llm.call", "timestamp": early.isoformat(),
                           "properties": {"feature": "support-chat"}} for i in range(40)]).accepted == 40
    ledger.close()
    runs = [forecast_alerts(any_engine, CAT, early + timedelta(hours=h)) for h in (1, 2, 3)]
    assert [(r["customers"], r["alerts"]) for r in runs] == [(1, 0), (1, 0), (0, 0)]
    # no event since, but the gate (10 % of the window) opens before the next run: 40 at 10 % is 400 projected
    gate = forecast_alerts(any_engine, CAT, T0 + timedelta(days=3, hours=12))
    assert (gate["customers"], gate["alerts"]) == (1, 1)
    assert forecast_alerts(any_engine, CAT, T0 + timedelta(days=3, hours=13))["customers"] == 0
    assert _forecast_rows(any_engine) == 1
