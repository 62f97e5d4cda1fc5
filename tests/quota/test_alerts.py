"""Budget alerts (pure thresholds, fired once per period) and the webhook outbox
(HMAC-signed, retried with backoff, at-least-once, deduped by id)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import httpx

from billing.api.outbox import WebhookDispatcher, sign, verify_signature
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
    state = UsageState(now=NOW, period_start=T0, period_end=T0, usage={"output_tokens": MeterUsage(D(40_000_000))})
    hits = {(a.subject, a.threshold) for a in reached(team, state)}  # $1,200 spent
    assert hits == {("budget", D(50)), ("budget", D(80)), ("spend_cap", D(50))}
    assert reached(CAT.get("blocky", 1), state) == []


def test_alerts_fire_once_and_queue_webhooks(any_engine):
    sqlite_engine = any_engine  # SQLite, then PostgreSQL
    clock = Clock()
    q = _quota(sqlite_engine, clock)
    events = _events(49)
    q.ledger.record(events)  # the ledger evaluates alerts after its commit (every door)
    assert Outbox(sqlite_engine).rows() == []
    r = q.reserve("acme", "messages")
    q.commit(r.id, {"properties": {"feature": "support-chat"}})  # the 50th message
    rows = Outbox(sqlite_engine).rows()
    assert [json.loads(x["payload"])["subject"] for x in rows] == ["charge:messages:included"]
    payload = json.loads(rows[0]["payload"])
    assert payload["type"] == "budget.threshold_reached" and payload["threshold_percent"] == "50"
    assert rows[0]["dedupe_id"] == payload["id"]
    assert q.evaluate_alerts("acme") == []  # once per period and threshold
    more = _events(40, 100)
    q.ledger.record(more)  # 90 messages: 80% fires
    assert [json.loads(x["payload"])["threshold_percent"] for x in Outbox(sqlite_engine).rows()] == ["50", "80"]


def test_dispatcher_signs_retries_and_delivers_once(sqlite_engine):
    clock = Clock()
    outbox = Outbox(sqlite_engine, clock=clock)
    with sqlite_engine.begin() as conn:
        assert Outbox.enqueue(conn, "d1", "acme", "budget.threshold_reached", {"x": 1}, 0)
        assert not Outbox.enqueue(conn, "d1", "acme", "budget.threshold_reached", {"x": 1}, 0)  # deduped
    received, statuses = [], [500, 200]

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(statuses.pop(0) if statuses else 200)

    client = httpx.Client(transport=httpx.MockTransport(handler))
    d = WebhookDispatcher(outbox, "https://hooks.example/billing", "s3cret", client=client, base_delay=10)
    assert d.run_once() == {"delivered": 0, "retried": 1, "dead": 0}
    assert d.run_once() == {"delivered": 0, "retried": 0, "dead": 0}  # backing off
    clock.now = NOW + timedelta(seconds=11)
    assert d.run_once() == {"delivered": 1, "retried": 0, "dead": 0}
    assert d.run_once() == {"delivered": 0, "retried": 0, "dead": 0}
    assert len(received) == 2
    req = received[-1]
    assert req.headers["Billing-Webhook-Id"] == "d1"
    assert verify_signature("s3cret", req.content, req.headers["Billing-Signature"], now=clock.now.timestamp())
    assert not verify_signature("other", req.content, req.headers["Billing-Signature"], now=clock.now.timestamp())
    assert not verify_signature("s3cret", req.content + b" ", req.headers["Billing-Signature"],
                                now=clock.now.timestamp())
    assert not verify_signature("s3cret", req.content, req.headers["Billing-Signature"],
                                now=clock.now.timestamp() + 3600)
    assert not verify_signature("s3cret", req.content, "garbage")
    row = outbox.rows()[0]
    assert (row["status"], row["attempts"]) == ("delivered", 2)


def test_dispatcher_gives_up_and_leases_rows(sqlite_engine):
    clock = Clock(datetime(2026, 10, 10, tzinfo=UTC))
    outbox = Outbox(sqlite_engine, clock=clock)
    with sqlite_engine.begin() as conn:
        Outbox.enqueue(conn, "d2", "acme", "t", {}, 0)
    # a claimed row is leased: a second dispatcher does not get it
    assert len(outbox.claim_due()) == 1 and outbox.claim_due() == []
    clock.now += timedelta(seconds=61)

    def down(request):
        raise httpx.ConnectError("down")

    d = WebhookDispatcher(outbox, "https://x", "k", client=httpx.Client(transport=httpx.MockTransport(down)),
                          max_attempts=3, base_delay=1)
    for _ in range(3):
        d.run_once()
        clock.now += timedelta(seconds=10)
    row = outbox.rows()[0]
    assert (row["status"], row["attempts"]) == ("dead", 3) and "ConnectError" in row["last_error"]
    assert d.backoff(1) == 1 and d.backoff(4) == 8
    assert sign("k", 1, b"{}") == sign("k", 1, b"{}") != sign("k", 2, b"{}")
