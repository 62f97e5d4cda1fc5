"""A seeded ledger for the margin, forecast, HTML and simulation-history tests: four
customers, October closed into invoices, some November usage; and the figures the tests
compare with (costs of events, invoiced totals, a snapshot proving a report only read)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import Session

from billing.catalog import Catalog
from billing.costs import CostBook, event_cost
from billing.events import UsageEvent
from billing.store.models import Invoice, InvoiceLineRow, UsageCounter, UsageEventRow

D = Decimal
ROOT = Path(__file__).resolve().parents[2]
OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)


def _event(i: int, customer: str, ts: datetime, **props) -> dict:
    base = {"model": "claude-sonnet-4-5", "input_tokens": 2100, "output_tokens": 400, "feature": "support-chat",
            "user": "u1", "task": "t1"}
    base.update(props)
    return {"id": f"{customer}-{i}", "customer": customer, "type": "llm.call",
            "timestamp": ts.isoformat().replace("+00:00", "Z"), "properties": base}


def seed_ledger(engine) -> dict:
    """Four customers, October closed into invoices, some November usage (an open period).

    - chat (support-chatbot, $20 + $0.05/message past 100, cap $50): 165 October calls
      (110 support-chat messages, 55 search); November: 60 messages by Nov 11.
    - api (token-api, cost + 25%, $50 minimum): 30 October calls on gpt-5-mini / opus.
    - team (team plan, 2 seats, $25 credits per seat): 40 big calls.
    - free (no subscription): 10 calls, all cost and no revenue (a whale).
    - heavy (support-chatbot): 400 November messages by Nov 11 (projected past the cap).
    """
    from billing.invoicing.service import Invoicing
    from billing.ledger.accounts import Accounts
    from billing.ledger.ingest import Ledger

    catalog = Catalog.from_paths(ROOT / "plans")
    accounts = Accounts(engine, catalog)
    for c in ("chat", "api", "team", "free", "heavy"):
        accounts.create_customer(c, now=OCT)
    accounts.subscribe("chat", "support-chatbot", at=OCT)
    accounts.subscribe("api", "token-api", at=OCT)
    accounts.subscribe("team", "team", at=OCT, seats=2)
    accounts.subscribe("heavy", "support-chatbot", at=OCT)
    events = []
    for i in range(165):
        events.append(_event(i, "chat", OCT + timedelta(hours=4 * i + 1),
                             feature="support-chat" if i % 3 else "search", user=f"u{i % 4}", task=f"t{i % 7}"))
    for i in range(30):
        events.append(_event(i, "api", OCT + timedelta(hours=7 * i + 2),
                             model="gpt-5-mini" if i % 5 else "claude-opus-4-1", feature="agent"))
    for i in range(40):
        events.append(_event(i, "team", OCT + timedelta(hours=11 * i + 3), input_tokens=50_000, output_tokens=8_000,
                             feature="coding", user=f"dev{i % 2}"))
    for i in range(10):
        events.append(_event(i, "free", OCT + timedelta(days=i, hours=4), model="claude-opus-4-1",
                             input_tokens=20_000, output_tokens=2_000))
    nov_now = NOV + timedelta(days=10)
    for i in range(60):
        events.append(_event(1000 + i, "chat", NOV + timedelta(hours=4 * i)))
    for i in range(400):
        events.append(_event(i, "heavy", NOV + timedelta(minutes=30 * i)))
    ledger = Ledger(engine, catalog, clock=lambda: nov_now)
    result = ledger.record(events)
    assert result.accepted == len(events), result.to_json(max_errors=3)
    Invoicing(engine, catalog, clock=lambda: NOV + timedelta(hours=1)).close(NOV)
    return {"catalog": catalog, "events": events, "now": nov_now}


def _costs(events, customer=None, start=OCT, end=NOV) -> Decimal:
    book = CostBook.load_default()
    total = D(0)
    for e in events:
        ev = UsageEvent.model_validate(e)
        if (customer is None or ev.customer == customer) and start <= ev.timestamp < end:
            total += event_cost(ev, book)
    return total


def _snapshot(engine) -> tuple:
    with Session(engine) as s:
        return (s.exec(select(func.count()).select_from(Invoice)).one(),
                s.exec(select(func.count()).select_from(InvoiceLineRow)).one(),
                s.exec(select(func.count()).select_from(UsageEventRow)).one(),
                tuple(s.exec(select(UsageCounter.customer_id, UsageCounter.meter, UsageCounter.units_micro)
                             .order_by(UsageCounter.customer_id, UsageCounter.meter, UsageCounter.period_start)).all()))


def _invoiced(engine) -> dict[str, Decimal]:
    with Session(engine) as s:
        rows = s.exec(select(Invoice.customer_id, Invoice.total_minor).where(Invoice.period_start >= OCT,
                                                                            Invoice.period_start < NOV)).all()
    return {c: D(t) / 100 for c, t in rows}
