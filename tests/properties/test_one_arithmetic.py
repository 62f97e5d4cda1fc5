"""The consumers of a plan's arithmetic agree with the invoice (pure): for any generated plan
(every price model, percentage with free units and per-transaction limits, included per
seat and pooled, multipliers, disputes, caps, credits, a minimum) and any event history,

* the spend the quota reports (``Decision.spend`` and the usage report per charge) is the
  usage amount ``rate_period`` bills (per charge: its usage and cap lines);
* the budget alert and forecast measures equal the invoice's (allowance units, each
  charge's billed spend of its cap, the usage total of the plan cap and budget);
* the simulation's fast path gives ``rate_period``'s total and fees;
* the arithmetic's own pieces agree: a charge's lines add up to ``charge_spend``, and the
  breakdown to ``charge_amount``.

The same, through the ledger and a close on SQLite and PostgreSQL, is in
``test_one_arithmetic_db.py``."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import parse_plan_text
from billing.events import UsageEvent
from billing.money import quantum
from billing.quota import MeterUsage, QuotaRequest, UsageState, decide
from billing.quota.alerts import reached
from billing.quota.usage import charge_spends
from billing.rating import arithmetic
from billing.rating.engine import RatingInput, rate_period
from billing.rating.meters import aggregate
from billing.rating.periods import calendar_month
from billing.reports.forecast import measures as forecast_measures
from billing.simulate.fastrate import FastRater
from tests.support.plan_strategies import event_cost, histories, plans

D = Decimal
OCT = calendar_month(2026, 10)
NOW = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
SETTINGS = settings(max_examples=150, deadline=None)


def usage_of(plan, raw_events):
    events = [UsageEvent.model_validate(e) for e in raw_events]
    return aggregate(plan, events, OCT.start, OCT.end, event_cost)


def quota_state(plan, usage, seats: int) -> UsageState:
    """What the ledger gives the quota: units, cost and events per meter, the committed
    transactions of the meters a percentage price rates one by one, and the totals per value
    of the meters a dimension price splits."""
    return UsageState(now=NOW, period_start=OCT.start, period_end=OCT.end, seats=seats,
                      usage={k: MeterUsage(t.units, t.cost, t.events, t.transactions, t.groups)
                             for k, t in usage.items()})


def invoice_measures(plan, inv, usage) -> dict[str, Decimal]:
    """The alert / forecast measures read off the invoice: subject -> value."""
    out: dict[str, Decimal] = {}
    for charge, summary in zip(plan.charges, inv.usage):
        if charge.included is not None and summary.included > 0:
            out[f"charge:{charge.key}:included"] = usage[charge.meter].units
        cap = getattr(charge.on_exhaustion, "spend_cap", None)
        if cap is not None and cap > 0:
            out[f"charge:{charge.key}:spend_cap"] = summary.amount
    total = sum((u.amount for u in inv.usage), D(0))
    if plan.spend_cap is not None and plan.spend_cap > 0:
        out["spend_cap"] = total
    if plan.budget_alerts.budget > 0:
        out["budget"] = total
    return out


@pytest.mark.slow
@SETTINGS
@given(plans(), histories(), st.integers(0, 4))
def test_quota_alerts_forecast_and_fast_path_equal_the_invoice(plan, raw_events, seats):
    usage = usage_of(plan, raw_events)
    inv = rate_period(RatingInput(plan, "c", OCT, usage, seat_changes=[(OCT.start, seats)]))
    billed = {u.charge: u.amount for u in inv.usage}
    by_charge = {key: sum((ln.amount for ln in inv.lines if ln.key == key and ln.kind in ("usage", "cap")), D(0))
                 for key in billed}
    assert billed == by_charge  # a charge's summary is its lines
    usage_total = sum(billed.values(), D(0))

    # the quota: the usage report per charge, and every decision's spend
    state = quota_state(plan, usage, seats)
    assert {c.charge: c.spend for c in charge_spends(plan, state)} == billed
    for meter in {c.meter for c in plan.charges}:
        assert decide(plan, state, QuotaRequest("c", meter, D(0))).spend == usage_total

    # alerts and forecast: the same measures, the invoice's values
    expected = invoice_measures(plan, inv, usage)
    assert {s: v for s, v, _, _ in forecast_measures(plan, usage, seats)} == expected
    for alert in reached(plan, state):
        assert alert.value == expected[alert.subject], alert

    # the simulation's fast path
    fast = FastRater(plan, OCT).rate(usage, seats)
    assert fast.total == inv.total
    assert fast.fees == sum((ln.amount for ln in inv.lines if ln.kind == "fee"), D(0))
    assert [(u.charge, u.amount) for u in fast.usage] == list(billed.items())


@pytest.mark.slow
@SETTINGS
@given(plans(), histories(), st.integers(0, 4))
def test_the_arithmetic_agrees_with_itself(plan, raw_events, seats):
    """charge_spend = billed(charge_amount) = the breakdown's billed amount; the breakdown's
    shares are whole minor units adding up to round(exact parts); the peak is at least the
    amount."""
    usage = usage_of(plan, raw_events)
    compiled = plan.compiled
    q = quantum(plan.currency)
    for charge in compiled.charges:
        t = usage[charge.meter]
        inc = arithmetic.included_units(charge, seats)
        args = (t.units, t.cost, t.events, t.transactions, inc, arithmetic.capacity_peaks(charge, usage), t.groups)
        amount = arithmetic.charge_amount(charge, plan.currency, *args)
        detail = arithmetic.breakdown(charge, plan.currency, *args)
        assert detail.amount == amount
        assert all(share % q == 0 for share in detail.shares)
        assert detail.billed == arithmetic.billed(charge, amount) == arithmetic.charge_spend(
            charge, plan.currency, *args)
        exact = arithmetic.exact_charge(charge, *args)
        assert sum((p.amount for p in detail.parts), D(0)) == exact
        assert arithmetic.peak_exact(charge, *args) >= exact


PERCENT_CAPPED = parse_plan_text("""
plan: pay
name: Payments
effective_from: 2026-01-01T00:00:00Z
meters: [{key: sales, event_type: sale, aggregation: sum, property: amount}]
charges:
  - key: sales
    meter: sales
    price: {model: percentage, rate: "0.029", fixed_fee: "0.30", free_units: 1}
    on_exhaustion: {policy: overage, spend_cap: "5.00"}
""")


def test_percentage_with_a_free_transaction_reaches_its_spend_cap():
    """The issue's example: the invoice bills 5.00; the quota used to compute 0 and never deny."""
    sales = [{"id": f"s{i}", "customer": "c", "type": "sale", "timestamp": f"2026-10-0{i + 1}T12:00:00Z",
              "properties": {"amount": "100"}} for i in range(4)]
    usage = usage_of(PERCENT_CAPPED, sales)  # 100 free, then 3 x 3.20 = 9.60, capped at 5.00
    assert rate_period(RatingInput(PERCENT_CAPPED, "c", OCT, usage)).total == D("5.00")
    state = quota_state(PERCENT_CAPPED, usage, 1)
    d = decide(PERCENT_CAPPED, state, QuotaRequest("c", "sales", D(100)))
    assert (d.outcome, d.reason, d.spend) == ("deny", "spend_cap_reached", D("5.00"))
    # one free sale and a 50 one: 1.75 spent, a 200 sale (6.10) would pass the cap, a 50 one not
    usage = usage_of(PERCENT_CAPPED, [{**sales[0]}, {**sales[1], "properties": {"amount": "50"}}])
    d = decide(PERCENT_CAPPED, quota_state(PERCENT_CAPPED, usage, 1), QuotaRequest("c", "sales", D(200)))
    assert (d.outcome, d.spend, d.amount) == ("deny", D("1.75"), D("3.25"))  # up to the 5.00 cap
    d = decide(PERCENT_CAPPED, quota_state(PERCENT_CAPPED, usage, 1), QuotaRequest("c", "sales", D(50)))
    assert (d.outcome, d.amount) == ("allow", D("1.75"))
