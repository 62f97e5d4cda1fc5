"""Budget alerts (pure thresholds, fired once per period), queued as ``alert.triggered``
webhooks (delivery: tests/alerts)."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal as D

from billing.reservations.holds import Outbox
from billing.quota import MeterUsage, UsageState
from billing.quota.alerts import reached
from tests.support.alerts import _events, _quota
from tests.support.quota import NOW, T0, Clock, catalog

CAT = catalog()


def test_reached_thresholds_pure():
    plan = CAT.get("support-chatbot", 1)  # 100 included, $50 overage cap; alerts at 50/80/100%
    state = UsageState(now=NOW, period_start=T0, period_end=T0 + timedelta(days=31),
                       usage={"messages": MeterUsage(D(900), D(0), 900)})
    hits = {(a.subject, a.threshold) for a in reached(plan, state)}
    assert hits == {("charge:messages:included", D(50)), ("charge:messages:included", D(80)),
                    ("charge:messages:included", D(100)), ("charge:messages:spend_cap", D(50)),
                    ("charge:messages:spend_cap", D(80))}  # $40 of $50
    team = CAT.get("team", 1)  # budget $1,500, cap $2,000
    state = UsageState(now=NOW, period_start=T0, period_end=T0 + timedelta(days=31),
                       usage={"output_tokens": MeterUsage(D(40_000_000))})
    hits = {(a.subject, a.threshold) for a in reached(team, state)}  # $1,200 spent
    assert hits == {("budget", D(50)), ("budget", D(80)), ("spend_cap", D(50))}
    assert reached(CAT.get("blocky", 1), state) == []


def test_alerts_fire_once_and_queue_webhooks(any_engine):
    sqlite_engine = any_engine  # SQLite, then PostgreSQL
    clock = Clock()
    q = _quota(sqlite_engine, clock)
    events = _events(49)
    q.ledger.record(events)  # the ledger evaluates alerts after its commit (every door)
    assert Outbox(sqlite_engine).rows(type_="alert.triggered") == []
    r = q.reserve("acme", "messages")
    q.commit(r.id, {"properties": {"feature": "support-chat"}})  # the 50th message
    rows = Outbox(sqlite_engine).rows(type_="alert.triggered")
    assert [json.loads(x["payload"])["data"]["subject"] for x in rows] == ["charge:messages:included"]
    payload = json.loads(rows[0]["payload"])
    assert payload["type"] == "alert.triggered" and payload["data"]["threshold_percent"] == "50"
    assert payload["data"]["rule"] == "threshold" and payload["customer"] == "acme"
    assert rows[0]["dedupe_id"] == payload["id"]
    assert q.evaluate_alerts("acme") == []  # once per period and threshold
    more = _events(40, 100)
    q.ledger.record(more)  # 90 messages: 80% fires
    assert [json.loads(x["payload"])["data"]["threshold_percent"] for x in Outbox(sqlite_engine).rows(type_="alert.triggered")] == ["50", "80"]


def test_whale_detection_on_a_plan_with_alerts_but_no_margin_floor():
    """Provider cost above revenue to date (the margin floor's rule at 0 %): ``whale``."""
    plan = CAT.get("support-chatbot", 1)  # $20 flat, 100 messages included, no cost guard
    earned = D(20) * D("9.5") / D(31)  # the flat fee's part earned by NOW (Oct 10 12:00)
    usage = {"messages": MeterUsage(D(50), D(0), 50)}  # within the allowance: no usage revenue

    def whale(cost):
        state = UsageState(now=NOW, period_start=T0, period_end=T0 + timedelta(days=31), usage=usage,
                           provider_cost=cost)
        return [(a.value, a.limit) for a in reached(plan, state) if a.subject == "whale"]

    assert whale(earned) == []  # cost equal to revenue: not above it
    assert whale(earned + D("0.01")) == [(earned + D("0.01"), earned)]
    assert whale(D(0)) == []
