"""Webhook delivery over loopback HTTP: fan-out to every matching endpoint, Standard
Webhooks signatures each receiver verifies with its own secret, retries with backoff, the
delivery log, dead deliveries and replay; the implicit BILLING_WEBHOOK_URL endpoint; two
dispatchers never deliver the same row (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import timedelta

import pytest

from billing.alerts import deliveries
from billing.alerts.delivery import WebhookDispatcher, verify_signature
from billing.alerts.endpoints import Endpoints
from billing.alerts.events import enqueue_alert, enqueue_event
from billing.alerts.outbox import Outbox
from billing.alerts.signing import verify
from billing.errors import BillingError
from billing.store.types import to_us
from tests.support.quota import NOW, Clock
from tests.support.webhooks import Receiver


def _queue(engine, n: int, type_: str = "invoice.finalized", at=NOW) -> list[str]:
    with engine.begin() as conn:
        for i in range(n):
            assert enqueue_event(conn, type_, f"inv_{i}", "acme", {"invoice": {"id": f"inv_{i}"}}, at)
            assert not enqueue_event(conn, type_, f"inv_{i}", "acme", {}, at)  # the same change: once
    return [f"{type_}:inv_{i}" for i in range(n)]


def test_fan_out_signs_for_each_endpoint_and_filters_types(any_engine):
    clock = Clock()
    eps = Endpoints(any_engine)
    with Receiver() as rx:
        every = eps.create(rx.url("/all"), now=NOW)
        invoices = eps.create(rx.url("/invoices"), event_types=["invoice.*"], now=NOW)
        alerts = eps.create(rx.url("/alerts"), event_types=["alert.triggered"], now=NOW)
        off = eps.create(rx.url("/off"), now=NOW)
        eps.update(off["id"], status="disabled", now=NOW)
        _queue(any_engine, 2)
        with any_engine.begin() as conn:
            assert enqueue_alert(conn, customer="acme", rule="whale", key="p1", data={"value": "39000"}, at=NOW)
            assert not enqueue_alert(conn, customer="acme", rule="whale", key="p1", data={}, at=NOW)
        d = WebhookDispatcher(Outbox(any_engine, clock=clock))
        assert d.run_once() == {"events": 3, "delivered": 6, "retried": 0, "dead": 0, "canceled": 0}
        assert d.run_once() == {"events": 0, "delivered": 0, "retried": 0, "dead": 0, "canceled": 0}
    assert len(rx.at("/all")) == 3 and len(rx.at("/invoices")) == 2 and len(rx.at("/alerts")) == 1
    assert rx.at("/off") == []
    for path, ep in (("/all", every), ("/invoices", invoices), ("/alerts", alerts)):
        for headers, body in rx.at(path):
            assert verify(ep["secret"], body, headers, now=NOW.timestamp())
            assert not verify(off["secret"], body, headers, now=NOW.timestamp())
            msg = json.loads(body)
            assert headers["webhook-id"] == msg["id"] and msg["customer"] == "acme"
            assert "billing-signature" not in headers  # the older scheme: the env endpoint only
    (alert_headers, alert_body), = rx.at("/alerts")
    alert = json.loads(alert_body)
    assert alert["type"] == "alert.triggered" and alert["data"] == {"rule": "whale", "value": "39000"}
    assert alert["id"] == alert_headers["webhook-id"] == "alert:whale:acme:p1"
    assert [r["status"] for r in Outbox(any_engine).rows()] == ["dispatched"] * 3


def test_retries_back_off_then_deliver_and_the_log_shows_each_attempt(any_engine):
    clock = Clock()
    with Receiver([500, 503]) as rx:
        ep = Endpoints(any_engine).create(rx.url(), now=NOW)
        (msg_id,) = _queue(any_engine, 1)
        d = WebhookDispatcher(Outbox(any_engine, clock=clock), base_delay=10)
        assert d.run_once()["retried"] == 1
        assert d.run_once()["retried"] == 0  # backing off: due in 10 s
        clock.now = NOW + timedelta(seconds=9)
        assert d.run_once() == {"events": 0, "delivered": 0, "retried": 0, "dead": 0, "canceled": 0}
        clock.now = NOW + timedelta(seconds=10)
        assert d.run_once()["retried"] == 1  # second failure: 20 s
        clock.now = NOW + timedelta(seconds=29)
        assert d.run_once()["delivered"] == 0
        clock.now = NOW + timedelta(seconds=30)
        assert d.run_once()["delivered"] == 1
    assert [h["webhook-id"] for h, _ in rx.at("/hooks")] == [msg_id] * 3  # the same id on every retry
    assert len({h["webhook-timestamp"] for h, _ in rx.at("/hooks")}) == 3  # each attempt signed anew
    page, more = deliveries.log(any_engine, endpoint=ep["id"])
    assert not more and len(page) == 1
    (row,) = page
    assert (row["status"], row["attempts"], row["last_status_code"], row["event_id"]) == ("delivered", 3, 200, msg_id)
    assert [(a["attempt"], a["status_code"], a["error"]) for a in row["log"]] == [
        (1, 500, "HTTP 500"), (2, 503, "HTTP 503"), (3, 200, None)]
    assert [a["at"] for a in row["log"]] == ["2026-10-10T12:00:00Z", "2026-10-10T12:00:10Z", "2026-10-10T12:00:30Z"]


def test_dead_after_max_attempts_then_replayed(any_engine):
    clock = Clock()
    eps = Endpoints(any_engine)
    with Receiver([500] * 3) as rx:
        ep = eps.create(rx.url(), now=NOW)
        (msg_id,) = _queue(any_engine, 1)
        d = WebhookDispatcher(Outbox(any_engine, clock=clock), max_attempts=3, base_delay=1)
        for _ in range(3):
            d.run_once()
            clock.now += timedelta(seconds=10)
        (row,), _ = deliveries.log(any_engine, status="dead")
        assert (row["attempts"], row["last_error"]) == (3, "HTTP 500") and d.backoff(1) == 1 and d.backoff(4) == 8
        assert d.run_once()["delivered"] == 0  # dead stays dead
        # replay by event id: pending again, attempts reset, the log keeps the history
        assert deliveries.replay(any_engine, to_us(clock.now), events=[msg_id]) == 1
        assert d.run_once()["delivered"] == 1
        # a new endpoint replays the event it never had; a second replay of the same re-sends
        late = eps.create(rx.url("/late"), now=NOW)
        assert deliveries.replay(any_engine, to_us(clock.now), events=[msg_id], endpoint=late["id"]) == 1
        assert deliveries.replay(any_engine, to_us(clock.now), events=["nope"]) == 0
        assert d.run_once()["delivered"] == 1
    assert len(rx.at("/hooks")) == 4 and len(rx.at("/late")) == 1
    (row,), _ = deliveries.log(any_engine, endpoint=ep["id"])
    assert row["status"] == "delivered" and [a["status_code"] for a in row["log"]] == [500, 500, 500, 200]


def test_a_disabled_or_deleted_endpoint_cancels_its_pending_deliveries(sqlite_engine):
    clock = Clock()
    eps = Endpoints(sqlite_engine)
    with Receiver([500]) as rx:
        ep = eps.create(rx.url(), now=NOW)
        _queue(sqlite_engine, 1)
        d = WebhookDispatcher(Outbox(sqlite_engine, clock=clock), base_delay=1)
        assert d.run_once()["retried"] == 1
        eps.update(ep["id"], status="disabled", now=NOW)
        clock.now += timedelta(seconds=5)
        assert d.run_once()["canceled"] == 1
    (row,), _ = deliveries.log(sqlite_engine)
    assert row["status"] == "canceled" and row["last_error"] == "endpoint disabled or deleted"


def test_the_implicit_env_endpoint_gets_every_event_with_both_signatures(any_engine):
    clock = Clock()
    with Receiver() as rx:
        ids = _queue(any_engine, 2)
        d = WebhookDispatcher(Outbox(any_engine, clock=clock), rx.url("/env"), "s3cret")
        assert d.run_once()["delivered"] == 2
    assert sorted(h["webhook-id"] for h, _ in rx.at("/env")) == ids
    for headers, body in rx.at("/env"):
        assert verify("s3cret", body, headers, now=NOW.timestamp())  # the secret's bytes as the key
        assert headers["billing-webhook-id"] == headers["webhook-id"]
        assert verify_signature("s3cret", body, headers["billing-signature"], now=NOW.timestamp())
    (row,), _ = deliveries.log(any_engine, endpoint="env", limit=1)
    # a dispatcher without the env URL leaves env deliveries alone
    assert row["status"] == "delivered"
    with any_engine.begin() as conn:
        enqueue_event(conn, "invoice.paid", "x", "acme", {}, NOW)
    WebhookDispatcher(Outbox(any_engine, clock=clock), rx.url("/env"), "s3cret").run_once(limit=0)  # fan-out only
    assert WebhookDispatcher(Outbox(any_engine, clock=clock)).run_once()["delivered"] == 0
    assert Outbox(any_engine).backlog() == 1


def test_endpoint_rules_are_named_errors(sqlite_engine):
    eps = Endpoints(sqlite_engine)
    for url in ("ftp://x/y", "javascript:alert(1)", "", "http://", "http:// spaced.example/", "x" * 3000, None, 7):
        with pytest.raises(BillingError) as err:
            eps.create(url, now=NOW)
        assert err.value.details == {"param": "url"} and str(err.value.code) == "validation_error"
    for types in (["invoice.nope"], "invoice.paid", [1], ["nope.*"]):
        with pytest.raises(BillingError) as err:
            eps.create("https://hooks.example/x", event_types=types, now=NOW)
        assert err.value.details == {"param": "event_types"}
    with pytest.raises(BillingError) as err:
        eps.create("https://hooks.example/x", secret="whsec_short", now=NOW)
    assert err.value.details == {"param": "secret"}
    ep = eps.create("https://hooks.example/x", event_types=["subscription.*", "invoice.paid"], now=NOW)
    with pytest.raises(BillingError) as err:
        eps.update(ep["id"], status="paused", now=NOW)
    assert err.value.details == {"param": "status"}
    with pytest.raises(BillingError) as err:
        eps.update("we_nope", url="https://x.example", now=NOW)
    assert str(err.value.code) == "not_found"
    assert eps.list()[0][0]["event_types"] == ["invoice.paid", "subscription.*"]
    assert "secret" not in eps.list()[0][0] and eps.get(ep["id"], with_secret=True)["secret"] == ep["secret"]
    rotated = eps.update(ep["id"], rotate_secret=True, now=NOW)
    assert rotated["secret"] != ep["secret"] and rotated["secret"].startswith("whsec_")
    assert eps.delete(ep["id"]) and not eps.delete(ep["id"]) and eps.list() == ([], False)


def test_two_dispatchers_never_deliver_the_same_row(any_engine):
    with Receiver(delay=0.002) as rx:
        eps = Endpoints(any_engine)
        eps.create(rx.url("/a"), now=NOW)
        eps.create(rx.url("/b"), event_types=["invoice.finalized"], now=NOW)
        ids = _queue(any_engine, 150)
        counts: list[dict] = []
        start = threading.Barrier(2)

        def work():
            d = WebhookDispatcher(Outbox(any_engine), lease_seconds=60, timeout=5)
            start.wait()
            total = Counter()
            for _ in range(20):
                total.update(d.run_once(limit=40))
            counts.append(dict(total))
            d.client.close()

        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    seen = Counter((p, h["webhook-id"]) for p, h, _ in rx.received)
    assert sorted(seen) == sorted([("/a", i) for i in ids] + [("/b", i) for i in ids])
    assert set(seen.values()) == {1}  # no row sent twice
    assert sum(c["delivered"] for c in counts) == 300 and sum(c["events"] for c in counts) == 150
    assert all(c["delivered"] > 0 for c in counts)  # both did share the work


def test_a_lost_answer_is_sent_again_with_the_same_id(sqlite_engine):
    """The receiver got the POST but its answer never came back in time: the delivery is
    retried (at least once) under the same webhook-id, which the receiver dedupes on."""
    clock = Clock()
    with Receiver(delay=0.6) as rx:
        Endpoints(sqlite_engine).create(rx.url(), now=NOW)
        (msg_id,) = _queue(sqlite_engine, 1)
        d = WebhookDispatcher(Outbox(sqlite_engine, clock=clock), timeout=0.2, base_delay=1)
        assert d.run_once()["retried"] == 1
        (row,), _ = deliveries.log(sqlite_engine)
        assert row["last_status_code"] is None and "Timeout" in row["last_error"]
        d.client.close()
        d = WebhookDispatcher(Outbox(sqlite_engine, clock=clock), timeout=5, base_delay=1)
        clock.now += timedelta(seconds=2)
        assert d.run_once()["delivered"] == 1
    assert [h["webhook-id"] for h, _ in rx.at("/hooks")] == [msg_id, msg_id]
