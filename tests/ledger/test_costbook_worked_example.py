"""The README's cost-book worked example end to end: an event with 1-hour cache writes,
``service_tier: batch``, a prompt over 200k tokens and web searches, sent to ``POST
/v1/events``, is costed exactly as the README says ($0.762), and re-costing (the same usage
for a model priced later with ``add_prices``, stored in ``cost_price`` with its new price
kinds) gives the same figure. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.costs import CostBook, extra_fields
from billing.ledger.accounts import Accounts
from billing.ledger.recost import add_prices
from billing.store.cost_prices import cost_book
from tests.support.costs import WORKED_EXAMPLE
from tests.support.quota import T0, catalog

CAT = catalog()
SENT = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
README_FIGURE_PICO = 762_000_000_000  # $0.762


def _rows(engine) -> dict[str, tuple[int, str | None]]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT event_id, cost_pico, unpriced FROM usage_event").all()
    return {e: (int(c), u) for e, c, u in rows}


def test_the_worked_example_through_the_api_and_a_recost(engine):
    accounts = Accounts(engine, CAT)
    accounts.create_customer("acme", now=T0)
    accounts.subscribe("acme", "token-api", at=T0)
    http = TestClient(create_app(engine, CAT, clock=lambda: SENT + timedelta(minutes=1), context_ttl=0),
                      base_url="http://testserver")
    _, key = create_key(engine, "ingest")
    house = {**WORKED_EXAMPLE, "model": "sonnet-house"}  # a model the book cannot price yet
    events = [{"id": eid, "customer": "acme", "type": "llm.call", "timestamp": SENT.isoformat(), "properties": props}
              for eid, props in (("w-shipped", WORKED_EXAMPLE), ("w-house", house))]
    answer = http.post("/v1/events", json={"events": events}, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    rows = _rows(engine)
    assert rows["w-shipped"] == (README_FIGURE_PICO, None)
    assert rows["w-house"][0] == 0 and "sonnet-house" in rows["w-house"][1]

    # the shipped Sonnet 4.5 sheet under the house name: stored (cost_price.extra), then re-costed
    sheet = CostBook.load_default().price_for("claude-sonnet-4-5", SENT)
    priced = sheet.model_copy(update={"model": "sonnet-house", "aliases": ()})
    result = add_prices(engine, CAT, [priced], origin="house.yaml", now=SENT + timedelta(hours=1))
    assert (result.events, result.cost_pico) == (1, README_FIGURE_PICO)
    assert _rows(engine)["w-house"] == (README_FIGURE_PICO, None)
    # a process reading the ledger's prices sees every price kind of the sheet
    stored = cost_book(engine).price_for("sonnet-house", SENT)
    assert stored == priced and extra_fields(stored)["context_tiers"]
