"""What the quota says a customer has spent is what the close bills, through the ledger, on
SQLite and PostgreSQL: for a generated plan (every price model, percentage with free units
and per-transaction limits, multipliers, disputes, caps, credits...) and event history,
``Quota.usage`` read from the running counters (and, for the meters counters cannot answer,
the events) gives each charge the spend of that charge's lines on the invoice the close
writes for the period, and the plan the sum of them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.catalog import Catalog, parse_plan_text
from billing.invoicing.service import Invoicing
from billing.ledger.accounts import Accounts
from billing.reservations.holds import Quota
from billing.ledger.ingest import Ledger
from billing.reservations.types import Op
from billing.quota import QuotaRequest
from billing.money import from_minor
from tests.support.db import documents, reset_database
from tests.support.plan_strategies import OCT_START, histories, plans

D = Decimal
NOW = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)  # the quota's clock: every event is before it
CLOSE = datetime(2026, 11, 1, tzinfo=UTC)
_ids = itertools.count()


def _json_numbers(event: dict) -> dict:
    """Numbers as JSON numbers (the strategies give exact decimal text)."""
    props = {k: (float(v) if k in ("cost", "amount") else v) for k, v in event["properties"].items()}
    return {**event, "properties": props}


@pytest.mark.slow
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_quota_spend_is_what_the_close_bills(module_db_url, module_engine, data):  # noqa: F811
    reset_database(module_db_url)
    n = next(_ids)
    plan = data.draw(plans(plan_id=f"gen{n}"))
    seats = data.draw(st.integers(1, 3))
    catalog = Catalog([plan])
    customer = f"c{n}"
    events = [_json_numbers(e) for e in data.draw(histories(customer, end=NOW))]
    accounts = Accounts(module_engine, catalog)
    accounts.create_customer(customer, currency=plan.currency, now=OCT_START)
    accounts.subscribe(customer, plan.plan, at=OCT_START, seats=seats)
    result = Ledger(module_engine, catalog, clock=lambda: NOW).record(events)
    assert result.accepted == len(events), result.results

    quota = Quota(module_engine, catalog, clock=lambda: NOW)
    try:
        report = quota.usage(customer)
    finally:
        quota.close()
    Invoicing(module_engine, catalog, clock=lambda: CLOSE).close(as_of=CLOSE)
    (invoice,) = [d for d in documents(module_engine) if d[4] == customer]
    lines = invoice[10]
    billed = {c.key: sum((from_minor(ln[5], plan.currency) for ln in lines
                          if ln[2] == c.key and ln[1] in ("usage", "cap")), D(0))
              for c in plan.charges}
    assert {c["charge"]: D(c["spend"]) for c in report["charges"]} == billed, (plan.model_dump_json(), events, lines)
    assert D(report["spend"]) == sum(billed.values(), D(0))


COUNTERLESS = """
plan: counterless
name: Meters the counters cannot rate
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: outcomes, event_type: outcome, disputes: {window_days: 2, id_property: outcome_id}}
  - {key: users, event_type: llm.call, aggregation: unique_count, property: user}
  - {key: sales, event_type: sale, aggregation: sum, property: amount,
     multipliers: {property: channel, default: 1, values: {partner: 2}}}
charges:
  - {key: outcomes, meter: outcomes, price: {model: per_unit, unit_price: "0.99"}}
  - {key: users, meter: users, price: {model: per_unit, unit_price: "5"}}
  - key: sales
    meter: sales
    price: {model: percentage, rate: "0.03", fixed_fee: "0.30", min_per_transaction: "0.50", free_units: 1}
    on_exhaustion: {policy: overage, spend_cap: "4.00"}
"""


def _event(i: int, type_: str, day: int, hour: int = 12, **props) -> dict:
    return {"id": f"x{i}", "type": type_, "timestamp": f"2026-10-{day:02d}T{hour:02d}:00:00Z", "properties": props}


def test_disputes_unique_counts_and_transactions_are_read_from_the_events(engine):  # noqa: F811
    plan = parse_plan_text(COUNTERLESS, "counterless.yaml")
    catalog = Catalog([plan])
    accounts = Accounts(engine, catalog)
    accounts.create_customer("acme", now=OCT_START)
    accounts.subscribe("acme", "counterless", at=OCT_START)
    events = [
        _event(1, "outcome", 2, outcome_id="a"), _event(2, "outcome", 3, outcome_id="b"),
        _event(3, "outcome", 4, outcome_id="c"),
        _event(4, "outcome.disputed", 3, 18, outcome_id="a"),  # inside a's window: a is not billed
        _event(5, "outcome.disputed", 8, outcome_id="b"),  # past b's window: b is billed
        _event(6, "llm.call", 5, user="u1"), _event(7, "llm.call", 6, user="u2"), _event(8, "llm.call", 7, user="u1"),
        _event(9, "sale", 10, amount=100),  # the free transaction
        _event(10, "sale", 11),  # no amount: no transaction
        _event(11, "sale", 12, amount=5),  # 0.15 + 0.30 -> the 0.50 minimum
        _event(12, "sale", 13, amount=50, channel="partner"),  # 100 weighted: 3.00 + 0.30
    ]
    result = Ledger(engine, catalog, clock=lambda: NOW).record([{**e, "customer": "acme"} for e in events])
    assert result.accepted == len(events)
    accounts.create_customer("beta", now=OCT_START)
    accounts.subscribe("beta", "counterless", at=OCT_START)
    beta = [_event(20, "outcome", 2, outcome_id="a"), _event(21, "outcome.disputed", 2, 13, outcome_id="a"),
            _event(22, "llm.call", 5, user="u9")]
    assert Ledger(engine, catalog, clock=lambda: NOW).record([{**e, "customer": "beta"} for e in beta]).accepted == 3
    quota = Quota(engine, catalog, clock=lambda: NOW)
    try:
        report = {c["charge"]: D(c["spend"]) for c in quota.usage("acme")["charges"]}
        # the sales cap holds against the transactions: 3.80 spent, any sale (at least 0.50) passes 4.00;
        # the plan has spent 1.98 + 10.00 + 3.80
        d = quota.check("acme", "sales", 1)
        assert (d.reason, d.spend, d.amount) == ("spend_cap_reached", D("15.78"), D("0.20"))
        # reservations read the state in the writer's batch statement: the same spend
        r = quota.reserve("acme", "outcomes")
        assert r.granted and (r.decision.spend, r.decision.amount) == (D("15.78"), D("0.99"))
        assert not quota.reserve("acme", "sales", 1).granted
        quota.release(r.id)
        if engine.dialect.name == "postgresql":  # concurrent checks share one batched read there
            ops = [Op("check", customer=c, request=QuotaRequest(c, "users")) for c in ("acme", "beta")]
            quota.check_batch(ops)
            assert [op.result.spend for op in ops] == [D("15.78"), D("5.00")]  # beta: its outcome was disputed
    finally:
        quota.close()
    assert report == {"outcomes": D("1.98"), "users": D("10.00"), "sales": D("3.80")}
    Invoicing(engine, catalog, clock=lambda: CLOSE).close(as_of=CLOSE)
    (invoice,) = [d for d in documents(engine) if d[4] == "acme"]
    billed = {key: sum((from_minor(ln[5], "USD") for ln in invoice[10] if ln[2] == key and ln[1] in ("usage", "cap")),
                       D(0)) for key in report}
    assert billed == report
