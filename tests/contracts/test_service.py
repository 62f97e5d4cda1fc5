"""A subscription's contract through ``Contracts`` reaching the close and the quota
decision, on SQLite and PostgreSQL: a dated price override (from the next period on), a
coupon for N periods, a term commitment spread over its term; and the bad inputs, each a
named error."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing.catalog import Catalog, parse_plan_text
from billing.contracts.service import Contracts
from billing.errors import BillingError, ErrorCode
from billing.reservations.holds import Quota
from tests.support.db import World, documents, invoicing_catalog

SALES = parse_plan_text("""plan: sales
name: Sales
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: sales, event_type: sale, aggregation: sum, property: amount}
charges:
  - {key: sales, meter: sales, price: {model: per_unit, unit_price: "0.01"}}
""")
CATALOG = Catalog([*invoicing_catalog().all(), SALES])
_ids = itertools.count(1)


def d(month: int, day: int = 1, hour: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def requests(customer: str, ts: datetime, n: int, model: str = "o3") -> list[dict]:
    return [{"id": f"r{next(_ids)}", "customer": customer, "type": "request", "timestamp": ts.isoformat(),
             "properties": {"model": model}} for _ in range(n)]


@pytest.fixture
def world(engine):
    return World(engine, CATALOG, d(10))


@pytest.fixture
def contracts(world):
    return Contracts(world.engine, CATALOG)


def subscribe(world: World, cid: str, plan: str = "copilot-premium", at: datetime | None = None) -> int:
    world.accounts.create_customer(cid, now=at or world.now)
    return world.accounts.subscribe(cid, plan, at=at or world.now).id


def lines(world: World, cid: str) -> list[list[tuple[str, str, int]]]:
    """(kind, key, amount_minor) of each of the customer's documents' lines, in id order."""
    return [[(kind, key, amount) for _, kind, key, _, _, amount, _, _ in doc[10]]
            for doc in documents(world.engine) if doc[4] == cid]


def test_override_coupon_and_term_commitment_reach_the_close(world, contracts):
    sub = subscribe(world, "acme")
    # from November: premium requests at $0.02 (not $0.04), 100 included (not 300)
    contracts.add_overrides(sub, [
        {"path": "charges/premium_requests/price/unit_price", "value": "0.02", "starts_at": d(11, 1)},
        {"path": "charges/premium_requests/included", "value": {"pooled": 100}, "starts_at": d(11, 1),
         "ends_at": d(12, 1)}], now=world.now)
    contracts.create_coupon("HALF", percent="50", duration="repeating", periods=2, applies_to="usage", now=world.now)
    contracts.redeem(sub, "HALF", at=d(10, 15), now=world.now)
    world.at(d(12, 20))
    world.record(requests("acme", d(10, 5), 400))  # October: 100 past 300 at $0.04 = $4.00
    world.record(requests("acme", d(11, 5), 400))  # November: 300 past 100 at $0.02 = $6.00
    world.record(requests("acme", d(12, 5), 400))  # December: 300 included again, still $0.02: $2.00, no coupon
    world.at(d(1, 2, year=2027))
    world.invoicing.close(d(1, 1, year=2027))
    october, november, december = lines(world, "acme")
    assert october == [("fee", "subscription", 1000), ("usage", "premium_requests", 0),
                       ("usage", "premium_requests", 400), ("discount", "coupon:HALF", -200)]
    assert november == [("fee", "subscription", 1000), ("usage", "premium_requests", 0),
                        ("usage", "premium_requests", 600), ("discount", "coupon:HALF", -300)]
    assert december == [("fee", "subscription", 1000), ("usage", "premium_requests", 0),
                        ("usage", "premium_requests", 200)]
    totals = [doc[8] for doc in documents(world.engine) if doc[4] == "acme"]
    assert totals == [1200, 1300, 1200]


def test_late_events_are_re_rated_at_the_contract_price(world, contracts):
    sub = subscribe(world, "re")
    contracts.add_overrides(sub, [{"path": "charges/premium_requests/price/unit_price", "value": "0.02",
                                   "starts_at": d(10)}], now=world.now)
    world.at(d(11, 2))
    world.invoicing.close(d(11, 1))
    world.record(requests("re", d(10, 20), 400))  # late for October: 100 past the 300 included
    world.at(d(12, 2))
    world.invoicing.close(d(12, 1))
    _, november = lines(world, "re")
    assert [(key, amount) for kind, key, amount in november if kind == "adjustment"] == [
        ("premium_requests", 200)]  # at the contract's $0.02, not the plan's $0.04


def test_an_override_needing_each_transaction_is_rated_from_the_events(world, contracts):
    """A per-transaction percentage price, brought by an override to a plan the counters can
    rate, is rated on each sale (the close reads the usage for the effective plan)."""
    sub = subscribe(world, "shop", plan="sales")
    contracts.add_overrides(sub, [{"path": "charges/sales/price", "starts_at": d(10), "value": {
        "model": "percentage", "rate": "0.1", "min_per_transaction": "1"}}], now=world.now)
    world.at(d(10, 20))
    world.record([{"id": f"s{i}", "customer": "shop", "type": "sale", "timestamp": d(10, 5 + i).isoformat(),
                   "properties": {"amount": amount}} for i, amount in enumerate((5, 20, 100))])
    world.at(d(11, 2))
    world.invoicing.close(d(11, 1))
    ((doc,),) = [lines(world, "shop")]
    # per sale: 10% at least 1.00 -> 1.00 + 2.00 + 10.00 (not 10% of the sum, 12.50)
    assert sum(amount for kind, _, amount in doc if kind == "usage") == 1300


def test_term_commitment_spreads_over_its_term(world, contracts):
    sub = subscribe(world, "term", at=d(10))
    # $120 over October-December (92 days): each month owes its share of the time
    contracts.add_commitment(sub, "120.00", starts_at=d(10), ends_at=d(1, 1, year=2027), now=world.now)
    world.at(d(1, 2, year=2027))
    world.invoicing.close(d(1, 1, year=2027))
    docs = lines(world, "term")
    true_ups = [amount for doc in docs for kind, _, amount in doc if kind == "commitment"]
    # $120 x 31/92 = 40.43 by October's end, x 61/92 = 79.57 by November's, 120.00 by December's:
    # each month owes 40.43, 39.14 and 40.43, less its $10 fee
    assert true_ups == [3043, 2914, 3043]
    assert sum(true_ups) + 3 * 1000 == 12000


def test_an_override_reaches_the_quota_decision(world, contracts):
    sub = subscribe(world, "q")
    contracts.add_overrides(sub, [{"path": "charges/premium_requests/included", "value": {"pooled": 5},
                                   "starts_at": d(10)}], now=world.now)
    contracts.add_overrides(sub, [{"path": "charges/premium_requests/on_exhaustion",
                                   "value": {"policy": "block"}, "starts_at": d(10)}], now=world.now)
    subscribe(world, "plain")
    world.at(d(10, 10))
    world.record(requests("q", d(10, 2), 5) + requests("plain", d(10, 2), 5))
    quota = Quota(world.engine, CATALOG, world.ledger, clock=lambda: world.now, context_ttl=0)
    try:
        decisions = [quota.check(c, "premium_requests", Decimal(1)) for c in ("q", "plain")]
    finally:
        quota.close()
    # 5 included (not 300) and blocked once used; the same usage on the plan as written: allowed
    assert [x.outcome for x in decisions] == ["deny", "allow"]


@pytest.mark.parametrize("overrides, problem", [
    ([{"path": "charges/nope/price/unit_price", "value": "1", "starts_at": d(11)}],
     "overrides[0].path: plan copilot-premium@v1 has no charge 'nope'"),
    ([{"path": "fees/platform/amount", "value": "1", "starts_at": d(11)}],
     "overrides[0].path: plan copilot-premium@v1 has no fee 'platform' (its fees: subscription)"),
    ([{"path": "fees/subscription/amount", "value": "-1", "starts_at": d(11)}],
     "overrides[0].value: fees[0].amount: Input should be greater than or equal to 0"),
    ([{"path": "meters/premium_requests/event_type", "value": "x", "starts_at": d(11)}],
     "overrides[0].path: 'meters' cannot be overridden"),
    ([{"path": "spend_cap", "value": "10", "starts_at": d(11), "ends_at": d(12, 15)},
      {"path": "spend_cap", "value": "20", "starts_at": d(12)}],
     "overrides[1]: overlaps overrides[0]"),
    ([{"path": "charges/premium_requests/price", "value": {"model": "per_unit", "unit_price": "1"},
       "starts_at": d(11)},
      {"path": "charges/premium_requests/price/unit_price", "value": "2", "starts_at": d(11, 20)}],
     "overrides[1]: overlaps overrides[0]"),
    ([{"path": "spend_cap", "value": "10", "starts_at": d(11), "ends_at": d(11)}],
     "overrides[0].ends_at: must be after starts_at"),
])
def test_bad_overrides_are_named_errors(world, contracts, overrides, problem):
    sub = subscribe(world, "bad")
    with pytest.raises(BillingError) as err:
        contracts.add_overrides(sub, overrides, now=world.now)
    assert err.value.code == ErrorCode.CONTRACT_INVALID
    assert any(p.startswith(problem) for p in err.value.details), err.value.details


def test_an_override_overlapping_a_stored_one_is_refused(world, contracts):
    sub = subscribe(world, "two")
    (first,) = contracts.add_overrides(sub, [{"path": "spend_cap", "value": "10", "starts_at": d(11)}], now=world.now)
    with pytest.raises(BillingError) as err:
        contracts.add_overrides(sub, [{"path": "spend_cap", "value": "20", "starts_at": d(12)}], now=world.now)
    assert err.value.details == [f"overrides[0]: overlaps override {first.id}: spend_cap (2026-12-01T00:00:00+00:00 "
                                 f".. open end) and spend_cap (2026-11-01T00:00:00+00:00 .. open end) would both be "
                                 f"in force"]


@pytest.mark.parametrize("kwargs, message", [
    ({"percent": "0", "duration": "once"}, "percent: must be more than 0 and at most 100"),
    ({"percent": "100.5", "duration": "once"}, "percent: must be more than 0 and at most 100"),
    ({"percent": "-5", "duration": "forever"}, "percent: must be more than 0 and at most 100"),
    ({"percent": "10", "amount": "5", "currency": "USD", "duration": "once"}, "percent / amount: give exactly one"),
    ({"amount": "5.001", "currency": "USD", "duration": "once"}, "amount: USD has 2 decimal places"),
    ({"percent": "10", "duration": "repeating"}, "periods: a repeating coupon lasts"),
    ({"percent": "10", "duration": "once", "periods": 3}, "periods: only a repeating coupon"),
    ({"percent": "10", "duration": "weekly"}, "duration: must be one of once, repeating, forever"),
    ({"percent": "10", "duration": "once", "applies_to": "fees"}, "applies_to: must be one of usage, all"),
])
def test_bad_coupons_are_named_errors(contracts, world, kwargs, message):
    with pytest.raises(BillingError) as err:
        contracts.create_coupon("C1", now=world.now, **kwargs)
    assert err.value.code == ErrorCode.CONTRACT_INVALID and err.value.message.startswith(message), err.value.message


def test_contract_changes_never_reach_an_invoiced_period(world, contracts):
    sub = subscribe(world, "late")
    world.at(d(11, 2))
    world.invoicing.close(d(11, 1))
    contracts.create_coupon("TEN", amount="10", currency="USD", duration="once", now=world.now)
    for attempt in (
            lambda: contracts.add_overrides(sub, [{"path": "spend_cap", "value": "1", "starts_at": d(10, 15)}],
                                            now=world.now),
            lambda: contracts.redeem(sub, "TEN", at=d(10, 20), now=world.now),
            lambda: contracts.add_commitment(sub, "100", starts_at=d(10), ends_at=d(12), now=world.now)):
        with pytest.raises(BillingError) as err:
            attempt()
        assert err.value.code == ErrorCode.PERIOD_INVOICED
    with pytest.raises(BillingError) as err:
        contracts.redeem(sub, "NOPE", at=d(11, 20), now=world.now)
    assert err.value.code == ErrorCode.COUPON_NOT_FOUND


def test_a_coupon_worth_more_than_the_invoice_stops_it_at_zero(world, contracts):
    sub = subscribe(world, "big")
    contracts.create_coupon("BIG", amount="500", currency="USD", duration="forever", now=world.now)
    contracts.redeem(sub, "BIG", at=d(10), now=world.now)
    world.at(d(11, 2))
    world.record(requests("big", d(10, 5), 400))
    world.invoicing.close(d(11, 1))
    (doc,) = lines(world, "big")
    assert doc[-1] == ("discount", "coupon:BIG", -1400)
    assert [x[8] for x in documents(world.engine)] == [0]


def test_redemptions_are_checked_and_idempotent(world, contracts):
    sub = subscribe(world, "r")
    contracts.create_coupon("EUR5", amount="5", currency="EUR", duration="once", now=world.now)
    with pytest.raises(BillingError) as err:
        contracts.redeem(sub, "EUR5", at=d(10, 2), now=world.now)
    assert err.value.code == ErrorCode.CURRENCY_MISMATCH
    contracts.create_coupon("USD5", amount="5", currency="USD", duration="repeating", periods=2, now=world.now)
    first = contracts.redeem(sub, "USD5", at=d(10, 2), now=world.now)
    assert first.ends_at == d(12)  # October and November
    assert contracts.redeem(sub, "USD5", at=d(10, 2), now=world.now).id == first.id
    with pytest.raises(BillingError) as err:
        contracts.redeem(sub, "USD5", at=d(10, 9), now=world.now)
    assert err.value.code == ErrorCode.CONFLICT
    with pytest.raises(BillingError) as err:
        contracts.create_coupon("USD5", amount="6", currency="USD", duration="once", now=world.now)
    assert err.value.code == ErrorCode.CONFLICT
