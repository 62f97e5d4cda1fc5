"""Signed Stripe webhooks through FastAPI's TestClient on an app that includes our router."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from billing.ledger.models import Invoice
from billing.stripe_sync.webhooks import get_engine, get_webhook_secret, router
from stripe_server import add_customer, add_invoice, make_db, sign

SECRET = "whsec_test_5ecret"


@pytest.fixture
def engine(tmp_path):
    _, engine = make_db(tmp_path)
    add_customer(engine, "acme")
    yield engine
    engine.dispose()


@pytest.fixture
def client(engine):
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_engine] = lambda: engine
    app.dependency_overrides[get_webhook_secret] = lambda: SECRET
    with TestClient(app) as c:
        yield c


def event(kind: str, stripe_id: str, *, metadata: dict | None = None, event_id: str = "evt_1",
          created: int = 1_790_000_000, paid_at: int | None = None) -> str:
    """A Stripe event in the shape Stripe sends (abridged recorded payload)."""
    return json.dumps({
        "id": event_id, "object": "event", "api_version": "2026-10-28.endive", "created": created,
        "livemode": False, "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
        "type": kind,
        "data": {"object": {
            "id": stripe_id, "object": "invoice", "amount_due": 1234, "amount_paid": 1234 if paid_at else 0,
            "currency": "usd", "customer": "cus_123", "metadata": metadata or {},
            "status": "paid" if paid_at else "open",
            "status_transitions": {"finalized_at": created - 100, "paid_at": paid_at, "voided_at": None,
                                   "marked_uncollectible_at": None},
            "total": 1234}},
    })


def post(client, payload: str, secret: str = SECRET, header: str | None = None, timestamp: int | None = None):
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    elif secret is not None:
        headers["Stripe-Signature"] = sign(payload, secret, timestamp)
    return client.post("/v1/stripe/webhook", content=payload, headers=headers)


def get(engine, invoice_id: int) -> Invoice:
    with Session(engine) as s:
        return s.get(Invoice, invoice_id)


def pushed(engine, amounts=(1234,), sid="in_abc") -> int:
    return add_invoice(engine, "acme", list(amounts), stripe_invoice_id=sid)


@pytest.mark.parametrize("kind", ["invoice.paid", "invoice.payment_succeeded"])
def test_paid_marks_invoice_paid(client, engine, kind):
    invoice_id = pushed(engine)
    r = post(client, event(kind, "in_abc", paid_at=1_790_000_050))
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "changed"
    inv = get(engine, invoice_id)
    assert inv.status == "paid"
    assert inv.paid_at == datetime.fromtimestamp(1_790_000_050, UTC)


def test_found_by_metadata_before_the_sync_stored_the_id(client, engine):
    invoice_id = add_invoice(engine, "acme", [500])
    r = post(client, event("invoice.paid", "in_new", metadata={"billing_invoice_id": str(invoice_id)}))
    assert r.json()["invoice_id"] == invoice_id
    assert get(engine, invoice_id).status == "paid"


def test_metadata_of_another_stripe_invoice_is_not_trusted(client, engine):
    invoice_id = pushed(engine, sid="in_real")
    r = post(client, event("invoice.paid", "in_stale", metadata={"billing_invoice_id": str(invoice_id)}))
    assert r.status_code == 200 and r.json()["result"] == "ignored"
    assert get(engine, invoice_id).status == "finalized"


@pytest.mark.parametrize("header", [
    "t=1,v1=deadbeef",
    "garbage",
    "",
])
def test_bad_signature_is_400_and_changes_nothing(client, engine, header):
    invoice_id = pushed(engine)
    r = post(client, event("invoice.paid", "in_abc"), header=header)
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_signature"
    assert r.json()["message"]
    assert get(engine, invoice_id).status == "finalized"


def test_wrong_secret_missing_header_and_stale_timestamp_are_rejected(client, engine):
    invoice_id = pushed(engine)
    payload = event("invoice.paid", "in_abc")
    assert post(client, payload, secret="whsec_other").status_code == 400
    assert post(client, payload, secret=None).json()["code"] == "invalid_signature"
    stale = post(client, payload, timestamp=int(time.time()) - 3600)  # outside the 5-minute tolerance
    assert stale.status_code == 400 and stale.json()["code"] == "invalid_signature"
    tampered = sign(payload, SECRET)
    assert post(client, payload.replace("1234", "1"), header=tampered).status_code == 400
    assert get(engine, invoice_id).status == "finalized"


def test_signed_garbage_is_400_invalid_payload(client):
    r = post(client, "not json")
    assert r.status_code == 400 and r.json()["code"] == "invalid_payload"


def test_replay_is_harmless(client, engine):
    invoice_id = pushed(engine)
    payload = event("invoice.paid", "in_abc", paid_at=1_790_000_050)
    first, second = post(client, payload), post(client, payload)
    assert first.json()["result"] == "changed"
    assert second.status_code == 200 and second.json()["result"] == "unchanged"
    assert get(engine, invoice_id).paid_at == datetime.fromtimestamp(1_790_000_050, UTC)


def test_payment_failed_sets_past_due_once(client, engine):
    invoice_id = pushed(engine)
    post(client, event("invoice.payment_failed", "in_abc", created=1_790_000_000, event_id="evt_a"))
    post(client, event("invoice.payment_failed", "in_abc", created=1_790_100_000, event_id="evt_b"))
    inv = get(engine, invoice_id)
    assert inv.status == "finalized"
    assert inv.payment_failed_at == datetime.fromtimestamp(1_790_000_000, UTC)  # the first failure counts


def test_out_of_order_paid_then_failed_stays_paid(client, engine):
    invoice_id = pushed(engine)
    post(client, event("invoice.paid", "in_abc", paid_at=1_790_000_500, event_id="evt_paid"))
    late = post(client, event("invoice.payment_failed", "in_abc", created=1_790_000_000, event_id="evt_failed"))
    assert late.status_code == 200 and late.json()["result"] == "unchanged"
    inv = get(engine, invoice_id)
    assert inv.status == "paid" and inv.payment_failed_at is None


def test_failed_then_paid_clears_dunning(client, engine):
    from billing.stripe_sync.dunning import is_payment_overdue

    invoice_id = pushed(engine)
    post(client, event("invoice.payment_failed", "in_abc", created=1_790_000_000, event_id="evt_f"))
    later = datetime.fromtimestamp(1_790_000_000, UTC).replace(year=2027)
    assert is_payment_overdue([get(engine, invoice_id)], 7, later)
    post(client, event("invoice.payment_succeeded", "in_abc", paid_at=1_790_200_000, event_id="evt_p"))
    assert get(engine, invoice_id).status == "paid"
    assert not is_payment_overdue([get(engine, invoice_id)], 7, later)


def test_void_stays_void(client, engine):
    invoice_id = add_invoice(engine, "acme", [100], status="void", stripe_invoice_id="in_void")
    r = post(client, event("invoice.paid", "in_void"))
    assert r.status_code == 200 and r.json()["result"] == "unchanged"
    assert get(engine, invoice_id).status == "void"


def test_unknown_event_type_and_unknown_invoice_are_acknowledged(client, engine):
    invoice_id = pushed(engine)
    r = post(client, json.dumps({"id": "evt_x", "object": "event", "type": "customer.created", "created": 1,
                                 "data": {"object": {"id": "cus_1", "object": "customer"}}}))
    assert r.status_code == 200 and r.json()["handled"] is False
    r = post(client, event("invoice.paid", "in_not_ours"))
    assert r.status_code == 200 and r.json()["result"] == "ignored"
    assert get(engine, invoice_id).status == "finalized"


def test_not_configured_secret_is_503(engine):
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_engine] = lambda: engine
    app.dependency_overrides[get_webhook_secret] = lambda: None
    with TestClient(app) as c:
        r = c.post("/v1/stripe/webhook", content="{}", headers={"Stripe-Signature": "t=1,v1=x"})
    assert r.status_code == 503 and r.json()["code"] == "webhook_not_configured"


def test_default_dependencies_read_settings(monkeypatch, tmp_path):
    from billing.config import get_settings

    url, engine = make_db(tmp_path)
    monkeypatch.setenv("BILLING_DATABASE_URL", url)
    monkeypatch.setenv("BILLING_STRIPE_WEBHOOK_SECRET", SECRET)
    get_settings.cache_clear()
    try:
        assert get_webhook_secret() == SECRET
        assert str(get_engine().url) == url
    finally:
        get_settings.cache_clear()
        engine.dispose()
