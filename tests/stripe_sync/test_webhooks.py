"""Signed Stripe webhooks through FastAPI's TestClient on an app that includes our router,
on SQLite and PostgreSQL; and the dunning path end to end (webhook -> quota decision)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from billing.store.models import Invoice
from billing.api.stripe_webhook import get_engine, get_webhook_secret, router
from tests.support.db import engine_for_url
from tests.support.stripe_server import add_customer, add_invoice, make_db, sign

SECRET = "whsec_test_5ecret"


@pytest.fixture
def engine(db_url):  # noqa: F811
    with engine_for_url(db_url) as eng:
        add_customer(eng, "acme")
        yield eng


@pytest.fixture
def client(engine):
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_engine] = lambda: engine
    app.dependency_overrides[get_webhook_secret] = lambda: SECRET
    with TestClient(app, raise_server_exceptions=False) as c:  # a 500 is a status, not an exception
        yield c


def event(kind: str, stripe_id: str, *, metadata: dict | None = None, event_id: str = "evt_1",
          created: int = 1_790_000_000, paid_at: int | None = None, total: int = 1234, currency: str = "usd") -> str:
    """A Stripe event in the shape Stripe sends (abridged recorded payload)."""
    return json.dumps({
        "id": event_id, "object": "event", "api_version": "2026-10-28.endive", "created": created,
        "livemode": False, "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
        "type": kind,
        "data": {"object": {
            "id": stripe_id, "object": "invoice", "amount_due": total, "amount_paid": total if paid_at else 0,
            "currency": currency, "customer": "cus_123", "metadata": metadata or {},
            "status": "paid" if paid_at else "open",
            "status_transitions": {"finalized_at": created - 100, "paid_at": paid_at, "voided_at": None,
                                   "marked_uncollectible_at": None},
            "total": total}},
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
    r = post(client, event("invoice.paid", "in_new", metadata={"billing_invoice_id": str(invoice_id)}, total=500))
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
    assert r.json()["error"]["code"] == "invalid_signature"
    assert r.json()["error"]["message"]
    assert get(engine, invoice_id).status == "finalized"


def test_wrong_secret_missing_header_and_stale_timestamp_are_rejected(client, engine):
    invoice_id = pushed(engine)
    payload = event("invoice.paid", "in_abc")
    assert post(client, payload, secret="whsec_other").status_code == 400
    assert post(client, payload, secret=None).json()["error"]["code"] == "invalid_signature"
    stale = post(client, payload, timestamp=int(time.time()) - 3600)  # outside the 5-minute tolerance
    assert stale.status_code == 400 and stale.json()["error"]["code"] == "invalid_signature"
    tampered = sign(payload, SECRET)
    assert post(client, payload.replace("1234", "1"), header=tampered).status_code == 400
    assert get(engine, invoice_id).status == "finalized"


@pytest.mark.parametrize("payload", [
    "not json", "[]", "1", '"x"', "null", '{"type": "invoice.paid", "data": "x"}',
    '{"type": "invoice.paid", "data": {"object": "in_abc"}}',
    '{"type": "invoice.paid", "data": {"object": {"id": 5}}}',
    '{"type": "invoice.paid", "data": {"object": {"id": "in_abc", "metadata": "x"}}}',
    '{"type": "invoice.paid", "data": {"object": {"id": "in_abc", "status_transitions": []}}}',
    '{"type": ["invoice.paid"], "data": {"object": {"id": "in_abc"}}}',
])
def test_signed_malformed_payload_is_400_invalid_payload(client, engine, payload):
    invoice_id = pushed(engine)
    r = post(client, payload)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_payload"
    assert get(engine, invoice_id).status == "finalized"


def test_odd_but_well_formed_values_are_ignored_not_500(client, engine):
    invoice_id = add_invoice(engine, "acme", [500])
    for meta in ("99999999999999999999", "-1", "1e5", " 1", str(invoice_id) + ".0"):
        r = post(client, event("invoice.paid", "in_new", metadata={"billing_invoice_id": meta}))
        assert r.status_code == 200 and r.json()["result"] == "ignored", (meta, r.text)
    payload = json.loads(event("invoice.paid", "in_new", metadata={"billing_invoice_id": str(invoice_id)},
                               total=500))
    payload["created"] = "yesterday"
    payload["data"]["object"]["status_transitions"]["paid_at"] = 10**30
    r = post(client, json.dumps(payload))
    assert r.status_code == 200 and r.json()["result"] == "changed"
    assert get(engine, invoice_id).status == "paid"


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids,
                                                                                     max_size=3), max_leaves=10)
field = st.one_of(json_values, st.just("in_abc"), st.just("invoice"), st.sampled_from(["invoice.paid",
                  "invoice.payment_failed", "invoice.payment_succeeded"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(event_value=st.one_of(
    json_values,
    st.fixed_dictionaries({"type": field, "created": field, "data": st.one_of(field, st.fixed_dictionaries(
        {"object": st.one_of(field, st.fixed_dictionaries({"id": field, "object": field, "metadata": st.one_of(
            field, st.fixed_dictionaries({"billing_invoice_id": field})), "status_transitions": st.one_of(
            field, st.fixed_dictionaries({"paid_at": field}))}))}))})))
def test_any_signed_json_is_answered_without_a_5xx(client, engine, event_value):
    r = post(client, json.dumps(event_value))
    assert r.status_code in (200, 400), r.text
    if r.status_code == 400:
        assert r.json()["error"]["code"] == "invalid_payload"


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


def test_failed_then_paid_clears_past_due(client, engine):
    invoice_id = pushed(engine)
    post(client, event("invoice.payment_failed", "in_abc", created=1_790_000_000, event_id="evt_f"))
    assert get(engine, invoice_id).payment_failed_at == datetime.fromtimestamp(1_790_000_000, UTC)
    post(client, event("invoice.payment_succeeded", "in_abc", paid_at=1_790_200_000, event_id="evt_p"))
    inv = get(engine, invoice_id)
    assert inv.status == "paid"  # a paid invoice no longer counts for dunning (see the end-to-end test)


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


def test_credit_note_is_never_marked_paid_or_past_due(client, engine):
    note = add_invoice(engine, "acme", [-300], kind="credit_note")
    for kind in ("invoice.paid", "invoice.payment_failed"):
        r = post(client, event(kind, "in_other", metadata={"billing_invoice_id": str(note)}, event_id=kind))
        assert r.status_code == 200 and r.json()["result"] == "unchanged", r.text
    inv = get(engine, note)
    assert inv.status == "finalized" and inv.payment_failed_at is None


def test_not_configured_secret_is_503(engine):
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_engine] = lambda: engine
    app.dependency_overrides[get_webhook_secret] = lambda: None
    with TestClient(app) as c:
        r = c.post("/v1/stripe/webhook", content="{}", headers={"Stripe-Signature": "t=1,v1=x"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "webhook_not_configured"


def test_default_dependencies_read_settings(monkeypatch, tmp_path):
    from billing.config import get_settings

    url, engine = make_db(tmp_path)
    monkeypatch.setenv("BILLING_DATABASE_URL", url)
    monkeypatch.setenv("BILLING_STRIPE_WEBHOOK_SECRET", SECRET)
    get_settings.cache_clear()
    try:
        assert get_webhook_secret() == SECRET
        app_without_services = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace()))
        assert str(get_engine(app_without_services).url) == url
    finally:
        get_settings.cache_clear()
        engine.dispose()


# ------------------------------------------------------------- dunning, end to end

DUNNING_PLAN = """
plan: dunned
name: Dunned after 3 days
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: requests, event_type: request, aggregation: count}
charges:
  - key: requests
    meter: requests
    included: {pooled: 100}
    on_exhaustion: {policy: block}
dunning: {deny_after_days: 3}
"""


def test_payment_failed_webhook_makes_quota_deny_after_the_plans_dunning_days(engine):
    """The full API app (webhook route mounted by create_app, no API key needed for it):
    a signed invoice.payment_failed starts the plan's dunning clock; quota checks allow for
    deny_after_days, then deny with payment_overdue; a later invoice.paid lifts it, and a
    replayed failure after that changes nothing."""
    from datetime import timedelta

    from billing.api.app import create_app
    from billing.api.auth import create_key
    from billing.catalog import Catalog, parse_plan_text

    failed_at = datetime(2026, 10, 10, 12, tzinfo=UTC)

    class Clock:
        now = failed_at

        def __call__(self):
            return self.now

    clock = Clock()
    app = create_app(engine, Catalog([parse_plan_text(DUNNING_PLAN, "dunned.yaml")]), clock=clock, context_ttl=0,
                     key_cache_ttl=0)
    app.dependency_overrides[get_webhook_secret] = lambda: SECRET
    key = create_key(engine, "admin")[1]
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(app, raise_server_exceptions=False) as api:
        r = api.post("/v1/customers/acme/subscriptions", headers=auth,
                     json={"plan": "dunned", "at": "2026-10-01T00:00:00Z"})
        assert r.status_code == 201, r.text
        invoice_id = pushed(engine, sid="in_dun")

        def check(at):
            clock.now = at
            r = api.post("/v1/quota/check", headers=auth, json={"customer": "acme", "meter": "requests"})
            assert r.status_code == 200, r.text
            return r.json()["outcome"], r.json()["reason"]

        assert check(failed_at)[0] == "allow"
        failed = event("invoice.payment_failed", "in_dun", created=int(failed_at.timestamp()), event_id="evt_f")
        r = post(api, failed)
        assert r.status_code == 200 and r.json()["result"] == "changed", r.text
        assert get(engine, invoice_id).payment_failed_at == failed_at
        assert check(failed_at + timedelta(days=3) - timedelta(seconds=1))[0] == "allow"
        assert check(failed_at + timedelta(days=3)) == ("deny", "payment_overdue")
        assert check(failed_at + timedelta(days=20)) == ("deny", "payment_overdue")
        assert post(api, failed).json()["result"] == "unchanged"  # a replay does not restart the clock
        paid = event("invoice.paid", "in_dun", paid_at=int((failed_at + timedelta(days=21)).timestamp()),
                     event_id="evt_p")
        assert post(api, paid).json()["result"] == "changed"
        assert check(failed_at + timedelta(days=21))[0] == "allow"
        assert post(api, failed).json()["result"] == "unchanged"  # late failure after payment
        assert check(failed_at + timedelta(days=22))[0] == "allow"
        with Session(engine) as s:
            assert [i.status for i in s.exec(select(Invoice)).all()] == ["paid"]


# ------------------------------------------------ amount and currency against the invoice

def _outbox(engine) -> list[dict]:
    from billing.alerts.outbox import Outbox

    return [r for r in Outbox(engine).rows() if r["type"] == "invoice.payment_mismatch"]


@pytest.mark.parametrize("total, currency", [(1233, "usd"), (1235, "usd"), (1234, "eur"), (123400, "usd"),
                                             (None, "usd"), (1234, None), ("1234", "usd"), (True, "usd")])
def test_a_payment_of_another_amount_or_currency_is_recorded_not_marked_paid(client, engine, total, currency):
    invoice_id = pushed(engine)  # 12.34 USD
    payload = json.loads(event("invoice.paid", "in_abc", paid_at=1_790_000_050))
    obj = payload["data"]["object"]
    for key, value in (("total", total), ("currency", currency)):
        if value is None:
            del obj[key]
        else:
            obj[key] = value
    for attempt in range(2):  # Stripe retries, replays: still one record, still not paid
        r = post(client, json.dumps(payload))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["result"] == "mismatch" and body["changed"] is False and body["status"] == "finalized"
        assert "not marked paid" in body["note"] and body["recorded"] is (attempt == 0)
        assert get(engine, invoice_id).status == "finalized" and get(engine, invoice_id).paid_at is None
    [row] = _outbox(engine)
    details = json.loads(row["payload"])["data"]  # the webhook envelope's data
    assert (details["invoice_id"], details["expected_total"], details["expected_currency"]) == (invoice_id, 1234, "usd")
    assert details["stripe_invoice_id"] == "in_abc" and row["customer_id"] == "acme"
    # the right figures mark it paid
    assert post(client, event("invoice.paid", "in_abc", event_id="evt_2", paid_at=1_790_000_060)).json()["result"] \
        == "changed"
    assert get(engine, invoice_id).status == "paid"


def test_amounts_compare_in_stripes_units_of_the_currency(client, engine):
    """ISK is zero-decimal for us and two-decimal in Stripe's API: 500 kr is Stripe's 50000."""
    invoice_id = add_invoice(engine, "acme", [500], currency="ISK", stripe_invoice_id="in_isk")
    assert post(client, event("invoice.paid", "in_isk", total=500, currency="isk")).json()["result"] == "mismatch"
    assert post(client, event("invoice.paid", "in_isk", total=50000, currency="isk", event_id="evt_2")
                ).json()["result"] == "changed"
    assert get(engine, invoice_id).status == "paid"


def test_concurrent_deliveries_record_a_mismatch_once_and_pay_once(engine):
    """Stripe delivers an event more than once, sometimes at the same moment (two servers)."""
    from concurrent.futures import ThreadPoolExecutor

    from billing.stripe_sync.webhooks import handle_event

    invoice_id = pushed(engine)
    wrong = json.loads(event("invoice.paid", "in_abc", total=999))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: handle_event(engine, wrong), range(8)))
    assert {r["result"] for r in results} == {"mismatch"} and sum(r["recorded"] for r in results) == 1
    assert len(_outbox(engine)) == 1 and get(engine, invoice_id).status == "finalized"
    right = json.loads(event("invoice.paid", "in_abc", event_id="evt_2", paid_at=1_790_000_050))
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: handle_event(engine, right), range(8)))
    assert sorted(r["result"] for r in results) == ["changed"] + ["unchanged"] * 7
    assert get(engine, invoice_id).status == "paid"
