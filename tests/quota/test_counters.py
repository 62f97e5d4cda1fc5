"""Usage recorded through ``Quota.commit`` lands in the running counters exactly as the same
events sent through ``Ledger.record`` do, including each period's ``*`` row (every event's
count and provider cost), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from billing.ledger.accounts import Accounts
from billing.reservations.holds import Quota
from billing.ledger.ingest import Ledger
from billing.reservations.types import Op
from tests.support.db import counter_rows
from tests.support.quota import NOW, T0, Clock, catalog

CAT = catalog()


def test_commits_count_like_ingested_events(any_engine):
    accounts = Accounts(any_engine, CAT)
    for customer in ("via-quota", "via-ledger"):
        accounts.create_customer(customer, now=T0)
        accounts.subscribe(customer, "support-chatbot", at=T0)
    clock = Clock()
    quota = Quota(any_engine, CAT, clock=clock)
    ledger = Ledger(any_engine, CAT, clock=clock)
    events, batch = [], []
    calls = [("claude-sonnet-4-5", 2100, "support-chat"), ("gpt-5-mini", 900, "support-chat"),
             ("claude-haiku-4-5", 3000, "search"), ("claude-sonnet-4-5", 10, "support-chat"),
             ("gpt-5-mini", 77, "search")]
    for i, (model, tokens, feature) in enumerate(calls):
        props = {"model": model, "input_tokens": tokens, "output_tokens": 400, "feature": feature}
        stamp = (NOW - timedelta(hours=i)).isoformat()
        event = {"id": f"e{i}", "type": "llm.call", "timestamp": stamp, "properties": props}
        reservation = quota.reserve("via-quota", "messages", 1)
        assert reservation.granted
        if i < 2:  # one by one
            quota.commit(reservation.id, event)
        else:  # several commits settled in one batch (as concurrent callers are)
            batch.append(Op("commit", reservation_id=reservation.id, event=event))
        events.append({**event, "customer": "via-ledger"})
    quota.writer._run_batch(batch)
    assert [op.error for op in batch] == [None] * len(batch)
    assert ledger.record(events).accepted == 5
    rows = counter_rows(any_engine)
    by_quota = {(m, start): v for (c, m, start), v in rows.items() if c == "via-quota"}
    by_ledger = {(m, start): v for (c, m, start), v in rows.items() if c == "via-ledger"}
    assert by_quota == by_ledger
    assert {m for m, _ in by_quota} == {"messages", "*"}
    ((_, (_, _, events_all, cost_all)),) = [(k, v) for k, v in by_quota.items() if k[0] == "*"]
    ((_, (_, _, events_msg, _)),) = [(k, v) for k, v in by_quota.items() if k[0] == "messages"]
    assert (events_all, events_msg) == (5, 3)  # "search" calls are no messages, but still events
    assert cost_all > 0
