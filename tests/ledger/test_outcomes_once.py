"""Outcome meters that count once, through the ledger (SQLite and PostgreSQL): a
``unique_count`` meter with ``disputes`` has no running counter, so the close
(``aggregate_sql``) and the quota's exact path (``reservations.exact``) read it from the
events, with the dispute rule of the Python aggregation (``rating.meters``)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from billing.catalog import Catalog, parse_plan_text
from billing.events import parse_event
from billing.invoicing.service import Invoicing
from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from billing.money import from_minor
from billing.rating.meters import aggregate
from billing.reservations.holds import Quota
from billing.store.aggregate_sql import aggregate_meters, max_event_id
from billing.store.types import to_us
from tests.support.db import documents
from tests.support.outcomes import CONVERSATIONS_YAML, SCENARIO, SCENARIO_BILLED, conversation_event

D = Decimal
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 10, 31, 23, tzinfo=UTC)


def test_resolved_conversations_count_once_in_the_close_and_the_quota(engine):
    plan = parse_plan_text(CONVERSATIONS_YAML, "conversations.yaml")
    catalog = Catalog([plan])
    accounts = Accounts(engine, catalog)
    for customer in ("acme", "beta"):
        accounts.create_customer(customer, now=START)
        accounts.subscribe(customer, "conversations", at=START)
    ledger = Ledger(engine, catalog, clock=lambda: NOW)
    acme = [{**e, "customer": "acme"} for e in SCENARIO]
    # beta's reopening of "a" does not touch acme's conversation "a"
    beta = [{**conversation_event(30, "conversation.resolved", 2, 12, "a"), "customer": "beta"},
            {**conversation_event(31, "conversation.reopened", 2, 13, "a"), "customer": "beta"}]
    assert ledger.record([*acme, *beta]).accepted == len(acme) + len(beta)

    python = aggregate(plan, [parse_event(e) for e in acme], START, END)
    assert python["resolved"].units == SCENARIO_BILLED
    with engine.connect() as conn:
        sql = aggregate_meters(conn, plan, ["acme", "beta"], to_us(START), to_us(END), max_event_id(conn))
    assert sql["acme"]["resolved"].units == SCENARIO_BILLED
    assert sql["beta"]["resolved"].units == 0

    quota = Quota(engine, catalog, clock=lambda: NOW)
    try:
        assert [(c["charge"], D(c["spend"])) for c in quota.usage("acme")["charges"]] == [("resolved", D("4.50"))]
        assert quota.check("acme", "resolved").spend == D("4.50")
        assert quota.check("beta", "resolved").spend == D(0)
    finally:
        quota.close()

    Invoicing(engine, catalog, clock=lambda: END).close(as_of=END)
    totals = {d[4]: from_minor(d[8], "USD") for d in documents(engine)}
    assert totals == {"acme": D("4.50"), "beta": D(0)}
