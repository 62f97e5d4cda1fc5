"""``BudgetReader`` (property): whatever mix of writes a customer's events get -- commits of
this process's reservations (added to the reader after their COMMIT, the ``fast`` path),
commits of another process's, events ingested through the ledger, backdated timestamps --
the budgets' rows it answers equal a fresh read of the events in each window, on SQLite and
PostgreSQL; and after this process's own commits alone it reads no event (``fast``)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, UTC
from decimal import Decimal as D

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.budgets.service import Budgets
from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from billing.reservations.budget_sql import BudgetReader
from billing.reservations.holds import Quota
from billing.reservations.sql import budget_rows_of, load_context, run_all
from tests.support.budgets import budget_catalog
from tests.support.quota import T0, Clock

CAT = budget_catalog()
BUDGETS = (
    {"name": "team-cost", "measure": "cost", "amount": "1000000", "window": "daily", "scope": "team=research"},
    {"name": "ann-requests", "measure": "units", "meter": "requests", "amount": "1000000", "window": "weekly",
     "scope": "user=ann"},
    {"name": "beta-billed", "measure": "billed", "amount": "1000000", "window": "monthly", "scope": "tag=beta"},
    {"name": "team-tokens", "measure": "units", "meter": "tokens", "amount": "1000000000", "window": "period",
     "scope": "team=research"},
)
_ids = itertools.count()

writes = st.lists(st.tuples(
    st.sampled_from(["own", "other", "ledger"]),  # this Quota's commit, another Quota's, an ingested event
    st.sampled_from([{}, {"team": "research"}, {"team": "ops"}, {"user": "ann"}, {"team": "research", "user": "ann"},
                     {"tags": ["beta"]}, {"tags": ["alpha", "beta"], "user": "ann"}]),
    st.integers(min_value=0, max_value=40),  # output tokens
    st.sampled_from(["0", "0.25", "1.5"]),  # reported cost
    st.sampled_from([0, 0, 0, 3, 20, 30, 60, 100]),  # hours back from now (0: the commit's own now)
), min_size=1, max_size=8)


def _rows(quota, reader, customer, now):
    with quota.conns.read() as conn:
        ctx = load_context(quota.conns, conn, CAT, customer, now)
        rows = budget_rows_of(quota.conns, conn, ctx, now, reader)
    events = {label: (D(units), int(cost), int(n)) for kind, label, units, cost, n in rows if kind == "e"}
    return {k: v for k, v in events.items() if v != (0, 0, 0)}, sorted(r[1:3] for r in rows if r[0] == "h")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=writes, now=st.sampled_from([datetime(2026, 10, 10, 12, tzinfo=UTC),  # windows inside the period
                                          datetime(2026, 10, 2, 12, tzinfo=UTC)]))  # the week from Sep 28
def test_the_reader_answers_what_a_fresh_read_of_the_events_answers(module_engine, batch, now):
    customer = f"reader-{next(_ids)}"
    acc = Accounts(module_engine, CAT)
    acc.create_customer(customer, now=T0)
    acc.subscribe(customer, "budgeted", at=T0)
    budgets = Budgets(module_engine, CAT, clock=Clock(now))
    for b in BUDGETS:
        budgets.create(customer, b)
    clock = Clock(now)
    mine, other = Quota(module_engine, CAT, clock=clock), Quota(module_engine, CAT, clock=clock)
    ledger = Ledger(module_engine, CAT, clock=clock)
    try:
        _rows(mine, mine.budget_reader, customer, now)  # the reader's first (full) read
        for i, (door, props, tokens, cost, back) in enumerate(batch):
            # an ingested event may predate the subscription (counted in no counter), a commit not
            at = now - timedelta(hours=back) if door == "ledger" else max(T0, now - timedelta(hours=back))
            event = {"id": f"{customer}-{i}", "type": "request", "timestamp": at.isoformat(),
                     "properties": {**props, "output_tokens": tokens, "cost": cost}}
            if door == "ledger":
                ledger.record([{**event, "customer": customer}])
                continue
            quota = mine if door == "own" else other
            r = quota.reserve(customer, "requests", properties=props, ttl=600)
            assert r.granted
            quota.commit(r.id, event if back else {k: v for k, v in event.items() if k != "timestamp"})
            assert _rows(mine, mine.budget_reader, customer, now) == _rows(mine, BudgetReader(), customer, now)
        if all(d == "own" for d, *_ in batch) and now.day == 10:  # only its own commits, windows in the period:
            reader = mine.budget_reader  # the counter alone tells nothing else was written
            with mine.conns.read() as conn:
                ctx = mine.context(conn, customer, now)
                q, token = reader.statement(mine.conns.pg, ctx, now)
                assert token[2] and "usage_event" not in q[0]
                assert reader.rows(ctx, token, run_all(mine.conns, conn, [q])[0]) is not None
    finally:
        mine.close()
        other.close()


def test_a_window_reaching_before_the_subscription_reads_the_events_there(any_engine):
    """The week from Monday Sep 28 reaches before the subscription (Oct 1): an event there is
    in no counter, so the counter cannot vouch for the reader's entry; it reads the events."""
    now = datetime(2026, 10, 2, 12, tzinfo=UTC)
    acc = Accounts(any_engine, CAT)
    acc.create_customer("acme", now=T0)
    acc.subscribe("acme", "budgeted", at=T0)
    Budgets(any_engine, CAT, clock=Clock(now)).create("acme", BUDGETS[1])
    quota = Quota(any_engine, CAT, clock=Clock(now))
    r = quota.reserve("acme", "requests", properties={"user": "ann"})
    quota.commit(r.id, {"type": "request", "properties": {"user": "ann"}})
    assert _rows(quota, quota.budget_reader, "acme", now)[0] == _rows(quota, BudgetReader(), "acme", now)[0]
    Ledger(any_engine, CAT, clock=Clock(now)).record([
        {"id": "early", "customer": "acme", "type": "request", "timestamp": "2026-09-30T00:00:00Z",
         "properties": {"user": "ann"}}])
    (label, (units, _cost, n)), = _rows(quota, quota.budget_reader, "acme", now)[0].items()
    assert (units, n) == (2, 2) and _rows(quota, BudgetReader(), "acme", now)[0] == {label: (units, _cost, n)}
    quota.close()
