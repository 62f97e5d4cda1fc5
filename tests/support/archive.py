"""The archive tests' world: acme and beta on token-api, October's events (closed) and a few
of November's, and counting the ledger's events (tests/ledger/test_archive*.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from billing.invoicing.service import Invoicing
from billing.ledger.ingest import Ledger
from tests.support.ledger import CATALOG, _setup

NOW = datetime(2026, 11, 15, tzinfo=UTC)


def ev(customer: str, event_id: str, timestamp: str, tokens: int = 100) -> dict:
    return {"id": event_id, "customer": customer, "type": "llm.call", "timestamp": timestamp,
            "properties": {"model": "claude-sonnet-4-5", "input_tokens": tokens, "output_tokens": 7,
                           "score": 0.1 + tokens / 1000}}


def _world(engine) -> tuple[Ledger, Invoicing, list[int]]:
    """acme and beta on token-api from October 1: October's events, then November's; October closed."""
    _setup(engine)
    ledger = Ledger(engine, CATALOG, clock=lambda: NOW, alerts=False)
    october = [ev(c, f"{c}-o{i}", f"2026-10-{1 + i % 28:02d}T10:00:00Z", 100 + i) for c in ("acme", "beta")
               for i in range(40)]
    assert ledger.record(october).accepted == 80
    assert ledger.record([ev("acme", f"n{i}", "2026-11-03T00:00:00Z") for i in range(5)]).accepted == 5
    invoicing = Invoicing(engine, CATALOG, clock=lambda: NOW)
    closed = invoicing.close(datetime(2026, 11, 2, tzinfo=UTC))
    assert len(closed.invoices) == 2
    return ledger, invoicing, closed.invoices


def _count(engine, where: str = "1 = 1") -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql(f"SELECT COUNT(*) FROM usage_event WHERE {where}").scalar_one()
