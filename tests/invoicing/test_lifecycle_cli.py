"""``billing invoice pay / void / uncollectible`` go through the one lifecycle: a credit note
is refused as the Stripe webhook path refuses it (``invalid_transition``, exit 2, a clear
message), and nothing about the document moves."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from billing.cli import app as cli
from billing.config import get_settings
from billing.store.db import engine_for
from tests.support.stripe_server import add_customer, add_invoice, make_db
from tests.support.quota import PLANS


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    url, engine = make_db(tmp_path)
    add_customer(engine, "acme")
    monkeypatch.setenv("BILLING_DATABASE_URL", url)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(PLANS))
    get_settings.cache_clear()
    engine_for.cache_clear()
    yield engine
    engine.dispose()


def invoke(*args: str):
    return CliRunner().invoke(cli, ["invoice", *args])


def show(invoice_id: int) -> dict:
    out = invoke("show", str(invoice_id), "--json")
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def test_pay_on_a_credit_note_is_refused(ledger):
    note = add_invoice(ledger, "acme", [-300], kind="credit_note")
    before = show(note)
    out = invoke("pay", str(note), "--at", "2026-11-02T00:00:00Z")
    assert out.exit_code == 2
    assert "invalid_transition" in out.output and "credit note" in out.output and "cannot pay" in out.output
    assert show(note) == before
    # a credit note can be voided, once; voiding again is an idempotent success
    for _ in range(2):
        out = invoke("void", str(note), "--at", "2026-11-03T00:00:00Z", "--json")
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)["status"] == "void"
    assert json.loads(out.output)["total"] == before["total"]


def test_pay_void_uncollectible_on_an_invoice(ledger):
    paid, written_off = (add_invoice(ledger, "acme", [1200]) for _ in range(2))
    assert invoke("pay", str(paid), "--at", "2026-11-02T00:00:00Z").exit_code == 0
    assert invoke("pay", str(paid)).exit_code == 0  # idempotent
    refused = invoke("void", str(paid))
    assert refused.exit_code == 2 and "invalid_transition" in refused.output and "is paid" in refused.output
    assert show(paid)["status"] == "paid" and show(paid)["paid_at"].startswith("2026-11-02")

    out = invoke("uncollectible", str(written_off), "--json")
    assert out.exit_code == 0 and json.loads(out.output)["status"] == "uncollectible"
    assert invoke("pay", str(written_off)).exit_code == 0  # still payable
    assert show(written_off)["status"] == "paid"
    assert invoke("uncollectible", str(written_off)).exit_code == 2
    unknown = invoke("pay", "999999")
    assert unknown.exit_code == 2 and "invoice_not_found" in unknown.output
