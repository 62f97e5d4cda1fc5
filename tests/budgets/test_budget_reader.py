"""``BudgetReader``: a customer's event-read budgets are read once, then only the events
stored since; an event below the last id read (a transaction that committed late) or a
re-costed event is noticed by the period's all-events counter and read again in full, on
SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal as D

from sqlalchemy import text

from billing.budgets.service import Budgets
from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from billing.reservations.holds import Quota
from tests.support.budgets import budget_catalog
from tests.support.quota import NOW, T0, Clock

CAT = budget_catalog()
TEAM = {"team": "research"}


def _record(engine, ids, cost_model=None):
    props = {"output_tokens": 10, **TEAM, **({"model": cost_model} if cost_model else {})}
    Ledger(engine, CAT, clock=Clock()).record([
        {"id": f"e{i}", "customer": "acme", "type": "request", "timestamp": NOW.isoformat(), "properties": props}
        for i in ids])


def _used(quota, name):
    d = quota.check("acme", "requests", properties=TEAM)
    assert d.budget["name"] == name
    return D(d.budget["used"])


def test_new_events_are_added_and_a_late_lower_id_or_a_recost_reads_everything_again(any_engine):
    acc = Accounts(any_engine, CAT)
    acc.create_customer("acme", now=T0)
    acc.subscribe("acme", "budgeted", at=T0)
    Budgets(any_engine, CAT, clock=Clock()).create("acme", {
        "name": "units", "measure": "units", "meter": "requests", "amount": "1000", "window": "daily",
        "scope": {"property": "team", "value": "research"}})
    quota = Quota(any_engine, CAT, clock=Clock())
    _record(any_engine, range(3))
    assert _used(quota, "units") == 3  # a full read
    _record(any_engine, range(3, 5))
    assert _used(quota, "units") == 5  # the two new events only
    entry = quota.budget_reader._entries["acme"]
    with any_engine.begin() as conn:  # an event with an id below the last one read, as a late commit leaves it
        last = conn.execute(text("SELECT MAX(id) FROM usage_event")).scalar()
        conn.execute(text("UPDATE usage_event SET id = :new WHERE id = :old"), {"new": last + 100, "old": last})
        conn.execute(text(
            "INSERT INTO usage_event (id, customer_id, event_id, type, ts, properties, cost_pico) "
            "SELECT :id, customer_id, 'late', type, ts, properties, cost_pico FROM usage_event WHERE id = :src"),
            {"id": last, "src": last + 100})
        conn.execute(text("UPDATE usage_counter SET events = events + 1 WHERE customer_id = 'acme' AND meter = '*'"))
    quota.budget_reader._entries["acme"] = entry._replace(last=last + 100)
    assert _used(quota, "units") == 6  # the counter moved by more than the events past the id: all read again
    budgets = Budgets(any_engine, CAT, clock=Clock())
    budgets.delete("acme", budgets.list("acme")[0].id)
    budgets.create("acme", {"name": "cost", "measure": "cost", "amount": "1", "window": "daily",
                            "scope": "team=research"})
    quota.forget("acme")
    assert _used(quota, "cost") == 0  # no price for these events: cost 0
    with any_engine.begin() as conn:  # a re-cost: every event priced, the counter's cost with them
        conn.execute(text("UPDATE usage_event SET cost_pico = 1000000 WHERE customer_id = 'acme'"))
        conn.execute(text("UPDATE usage_counter SET cost_pico = 6000000 WHERE customer_id = 'acme' AND meter = '*'"))
    assert _used(quota, "cost") == D("0.000006")
    quota.close()
