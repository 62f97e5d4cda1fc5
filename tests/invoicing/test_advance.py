"""Advance billing (``billing.advance_fees: at_period_start``): the worked example of
plans/README.md ("Advance billing") through the real CLI and ledger, on both databases;
re-running closes bills nothing twice; seat changes cannot reach back to an invoiced
advance window; late events correct only the arrears part."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from billing.cli import app as cli
from billing.config import get_settings
from billing.errors import BillingError, ErrorCode
from billing.store.db import engine_for
from tests.support.db import PLANS_DIR, World, shipped_catalog

@pytest.fixture
def cli_ledger(db_url, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(PLANS_DIR))
    get_settings.cache_clear()
    engine_for.cache_clear()
    yield db_url
    engine_for.cache_clear()


def billing(*args: str) -> str:
    out = CliRunner().invoke(cli, list(args))
    assert out.exit_code == 0, out.output
    return out.output


def requests(prefix: str, days: list[str]) -> str:
    return "".join(json.dumps({"id": f"{prefix}{i}", "customer": "acme", "type": "assistant.request",
                               "timestamp": f"{day}T12:00:00Z", "properties": {}}) + "\n"
                   for i, day in enumerate(days))


def invoice(number: int) -> dict:
    return json.loads(billing("invoice", "show", str(number), "--json"))


def amounts(doc: dict) -> list[tuple[str, str, bool]]:
    return [(ln["description"], ln["amount"], ln["billed_in_advance"]) for ln in doc["lines"]]


def test_worked_example_through_the_cli(cli_ledger, tmp_path):
    """plans/README.md, "Advance billing": 170.00 when October starts, 256.45 when November
    starts (October's arrears + November's advance), 5.00 at the cancellation (arrears only)."""
    billing("customers", "create", "acme")
    billing("subscriptions", "create", "acme", "team-advance", "--at", "2026-10-01T00:00:00Z", "--seats", "5")
    billing("invoice", "close", "--as-of", "2026-10-01T00:00:00Z")
    billing("subscriptions", "seats", "acme", "8", "--at", "2026-10-16T00:00:00Z")
    billing("subscriptions", "seats", "acme", "6", "--at", "2026-10-21T00:00:00Z")
    events = tmp_path / "requests.jsonl"
    events.write_text(requests("oct", [f"2026-10-{1 + i % 31:02d}" for i in range(1000)])
                      + requests("nov", [f"2026-11-{1 + i % 15:02d}" for i in range(700)]))
    billing("events", "import", str(events))
    billing("invoice", "close", "--as-of", "2026-11-01T00:00:00Z")
    billing("subscriptions", "cancel", "acme", "--at", "2026-11-16T00:00:00Z")
    billing("invoice", "close", "--as-of", "2026-11-16T00:00:00Z")
    for _ in range(2):  # re-running a close bills nothing again
        assert json.loads(billing("invoice", "close", "--as-of", "2026-12-01T00:00:00Z", "--json"))["invoices"] == []
    docs = json.loads(billing("invoice", "list", "--json"))
    assert [(d["number"], d["total"]) for d in docs] == [
        ("INV-000001", "170.00"), ("INV-000002", "256.45"), ("INV-000003", "5.00")]
    assert amounts(invoice(1)) == [
        ("Platform fee (in advance: 2026-10-01..2026-11-01)", "20.00", True),
        ("Team seat (5 seats) (in advance: 2026-10-01..2026-11-01)", "150.00", True)]
    assert amounts(invoice(2)) == [
        ("Team seat: 3 seat(s) added 2026-10-16, prorated 51.61%", "46.45", False),
        ("Assistant requests: 1000 used, 800 included", "0.00", False),
        ("Assistant requests", "10.00", False),
        ("Platform fee (in advance: 2026-11-01..2026-12-01)", "20.00", True),
        ("Team seat (6 seats) (in advance: 2026-11-01..2026-12-01)", "180.00", True)]
    second = invoice(2)["lines"]
    assert {ln["service_period"]["start"] for ln in second if not ln["billed_in_advance"]} == {"2026-10-01T00:00:00Z"}
    assert {ln["service_period"]["start"] for ln in second if ln["billed_in_advance"]} == {"2026-11-01T00:00:00Z"}
    assert amounts(invoice(3)) == [("Assistant requests: 700 used, 600 included", "0.00", False),
                                   ("Assistant requests", "5.00", False)]


@pytest.fixture
def world(engine) -> World:
    return World(engine, shipped_catalog(), datetime(2026, 10, 1, tzinfo=UTC))


def d(month: int, day: int) -> datetime:
    return datetime(2026, month, day, tzinfo=UTC)


def test_seat_changes_cannot_reach_an_invoiced_advance_window(world):
    world.accounts.create_customer("acme", now=d(10, 1))
    world.accounts.subscribe("acme", "team-advance", at=d(10, 1), seats=2)
    world.at(d(10, 2))
    world.invoicing.close(d(10, 2))
    with pytest.raises(BillingError) as refused:
        world.accounts.change_seats("acme", 3, at=d(10, 1))
    assert refused.value.code == ErrorCode.PERIOD_INVOICED
    world.accounts.change_seats("acme", 3, at=d(10, 10))  # inside the window: billed in arrears
    world.at(d(11, 1))
    assert len(world.invoicing.close(d(11, 1)).invoices) == 1
    with pytest.raises(BillingError):
        world.accounts.change_seats("acme", 4, at=d(11, 1))  # November's advance is invoiced


def test_late_events_correct_only_the_arrears_lines(world):
    """An October request arriving after October closed lands as an adjustment of the
    requests charge on the next invoice: the advance fees are never re-rated."""
    world.accounts.create_customer("acme", now=d(10, 1))
    world.accounts.subscribe("acme", "team-advance", at=d(10, 1), seats=1)
    world.at(d(10, 20))
    world.record({"id": f"r{i}", "customer": "acme", "type": "assistant.request",
                  "timestamp": d(10, 5).isoformat(), "properties": {}} for i in range(100))
    world.accounts.cancel("acme", at=d(11, 20))
    world.at(d(11, 1))
    first = world.invoicing.close(d(11, 1))
    assert len(first.invoices) == 2  # the opening invoice and October's
    world.at(d(11, 2))
    world.record([{"id": "late", "customer": "acme", "type": "assistant.request",
                   "timestamp": d(10, 6).isoformat(), "properties": {}}])
    world.at(d(11, 21))
    last = world.invoicing.close(d(11, 21))
    header, lines = world.invoicing.get(last.invoices[0])
    adjustments = [(ln.key, ln.amount_minor) for ln in lines if ln.kind == "adjustment"]
    assert adjustments == [("requests", 5)]  # 101 requests, 100 included: one at $0.05
    assert not any(ln.billed_in_advance for ln in lines)  # the last window: arrears only


def test_a_first_window_all_in_trial_gets_no_opening_invoice(world):
    """A 45-day trial: October's advance fees are waived, so no opening invoice; November's
    advance fees are prorated to the part after the trial, on October's closing invoice."""
    from billing.catalog import Catalog, parse_plan_text

    text = (PLANS_DIR / "team-advance.yaml").read_text().replace("currency: USD", "currency: USD\ntrial_days: 45")
    world.catalog = Catalog([parse_plan_text(text, "team-advance.yaml")])
    world.invoicing.catalog = world.accounts.catalog = world.catalog
    world.accounts.create_customer("acme", now=d(10, 1))
    world.accounts.subscribe("acme", "team-advance", at=d(10, 1), seats=1)
    world.at(d(10, 5))
    for _ in range(2):
        assert world.invoicing.close(d(10, 5)).invoices == []
    world.at(d(11, 1))
    (closing,) = world.invoicing.close(d(11, 1)).invoices
    header, lines = world.invoicing.get(closing)
    # the trial ends Nov 15: 16 of November's 30 days are billed, 20 x 16/30 and 30 x 16/30
    assert [(ln.key, ln.amount_minor, ln.billed_in_advance) for ln in lines if ln.kind == "fee"] == [
        ("platform", 1067, True), ("seat", 1600, True)]
