"""Cost guards over the database (``Quota``): a reservation holds the cost book's estimate
of its call when the caller names a model and tokens but no cost, and concurrent
reservations of two ``Quota`` objects (two servers' worth of writers) never hold more
estimated cost than the cap, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal as D

from billing.ledger.accounts import Accounts
from billing.reservations.holds import Quota
from tests.support.guards import COST_CAP, EXPENSIVE, guarded_catalog
from tests.support.quota import T0, Clock

CAT = guarded_catalog()
TOKENS = 10_000
ESTIMATE = D(TOKENS) * D(75) / 1_000_000  # opus's output rate per 1M tokens: 0.75 per call


def test_a_reservation_holds_its_estimated_cost_and_a_check_counts_it(any_engine):
    Accounts(any_engine, CAT).create_customer("acme", now=T0)
    Accounts(any_engine, CAT).subscribe("acme", "cost-capped", at=T0)
    quota = Quota(any_engine, CAT, clock=Clock())
    r = quota.reserve("acme", "requests", model=EXPENSIVE, tokens=TOKENS)
    assert r.granted and quota.get(r.id).cost_pico == int(ESTIMATE * 10**12)
    given = quota.reserve("acme", "requests", model=EXPENSIVE, tokens=TOKENS, cost="0.5")  # the caller's wins
    assert quota.get(given.id).cost_pico == int(D("0.5") * 10**12)
    assert quota.reserve("acme", "requests", model="no-such-model", tokens=TOKENS).granted  # nothing to estimate
    d = quota.check("acme", "requests", cost=COST_CAP - ESTIMATE - D("0.5") + D("0.01"))
    assert (d.outcome, d.guard) == ("deny", "cost_cap")


def test_concurrent_reservations_of_two_quotas_never_hold_more_cost_than_the_cap(any_engine):
    acc = Accounts(any_engine, CAT)
    acc.create_customer("acme", now=T0)
    acc.subscribe("acme", "cost-capped", at=T0)
    quotas = [Quota(any_engine, CAT, clock=Clock(), writers=2) for _ in range(2)]

    def one(i: int):
        return quotas[i % 2].reserve("acme", "requests", model=EXPENSIVE, tokens=TOKENS, ttl=600)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(one, range(48)))
    granted = [r for r in results if r.granted]
    assert len(granted) == int(COST_CAP / ESTIMATE) == 33
    assert all(r.decision.guard == "cost_cap" for r in results if not r.granted)
    held = sum(quotas[0].get(r.id).cost_pico for r in granted)
    assert D(held) / 10**12 == 33 * ESTIMATE <= COST_CAP
    for q in quotas:
        q.close()


def test_events_ingested_behind_the_quota_count_and_alert_once(any_engine):
    from sqlalchemy import text

    from billing.ledger.ingest import Ledger
    from tests.support.quota import NOW

    acc = Accounts(any_engine, CAT)
    acc.create_customer("acme", now=T0)
    acc.subscribe("acme", "cost-capped", at=T0)
    ledger = Ledger(any_engine, CAT, clock=Clock())
    # 3 calls of opus at 100k input + 100k output tokens: $9 each, $27 > the $25 cap
    ledger.record([{"id": f"e{i}", "customer": "acme", "type": "request", "timestamp": NOW.isoformat(),
                    "properties": {"model": EXPENSIVE, "input_tokens": 100_000, "output_tokens": 100_000}}
                   for i in range(3)])
    quota = Quota(any_engine, CAT, ledger, clock=Clock())
    d = quota.check("acme", "requests")
    assert (d.outcome, d.guard, d.cost_remaining) == ("deny", "cost_cap", 0)
    with any_engine.connect() as conn:
        rows = conn.execute(text("SELECT subject, value FROM budget_alert WHERE customer_id = 'acme'")).all()
    # the cap's alert, and whale detection (no margin floor here: cost $27 > revenue to date)
    assert sorted((s, D(v)) for s, v in rows) == [("cost_guard:cost_cap", D(27)), ("whale", D(27))]
    quota.close()
