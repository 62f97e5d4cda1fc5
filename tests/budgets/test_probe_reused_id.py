"""A budget deleted and another created: on SQLite the new row took the deleted one's id (an
INTEGER PRIMARY KEY without AUTOINCREMENT reuses the largest id), so the new budget's
crossing was taken for the old one's (``budget_alert`` subject ``budget:<id>``, the same
outbox key) and never alerted, and live holds' parts for the old budget counted against it.
Budget ids are now never reused (AUTOINCREMENT on SQLite; PostgreSQL's sequence never did)."""

from __future__ import annotations

from sqlalchemy import text

from billing.budgets.service import Budgets
from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from tests.support.budgets import budget_catalog
from tests.support.quota import NOW, T0, Clock

CAT = budget_catalog()


def _customer(engine):
    acc = Accounts(engine, CAT)
    acc.create_customer("acme", now=T0, timezone="Europe/Paris")
    acc.subscribe("acme", "budgeted", at=T0)


def _batch(start: int, n: int, props: dict) -> list[dict]:
    return [{"id": f"e{start + i}", "customer": "acme", "type": "request", "timestamp": NOW.isoformat(),
             "properties": {"output_tokens": 10, **props}} for i in range(n)]


def _alerts(engine) -> tuple[list[str], int]:
    with engine.connect() as conn:
        subjects = conn.execute(text("SELECT subject FROM budget_alert WHERE customer_id = 'acme' "
                                     "ORDER BY subject")).scalars().all()
        queued = conn.execute(text("SELECT COUNT(*) FROM webhook_outbox WHERE customer_id = 'acme' "
                                   "AND type = 'alert.triggered'")).scalar()
    return list(subjects), queued


def test_a_budget_created_after_one_was_deleted_alerts_on_its_own_crossing(any_engine):
    _customer(any_engine)
    budgets = Budgets(any_engine, CAT, clock=Clock())
    old = budgets.create("acme", {"name": "ann-cost", "measure": "cost", "amount": "1", "window": "daily",
                                  "scope": "user=ann"})[0]
    ledger = Ledger(any_engine, CAT, clock=Clock())
    ledger.record(_batch(0, 11, {"user": "ann", "cost": "0.1"}))  # $1.10: crossed
    assert _alerts(any_engine)[1] == 1
    budgets.delete("acme", old.id)
    new = budgets.create("acme", {"name": "bob-cost", "measure": "cost", "amount": "1", "window": "daily",
                                  "scope": "user=bob"})[0]
    assert new.id != old.id
    ledger.record(_batch(100, 11, {"user": "bob", "cost": "0.1"}))  # the new budget's own crossing
    rows, queued = _alerts(any_engine)
    assert rows == sorted([f"budget:{old.id}", f"budget:{new.id}"]) and queued == 2
