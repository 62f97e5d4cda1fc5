"""The simulation fast path gives exactly what ``rate_period`` gives (total, fees, per-charge
usage) on every shipped / example plan and on plans exercising every price model, cap,
credit and commitment rule, for generated usage and seat counts."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import load_plan_file, parse_plan_text
from billing.rating.engine import RatingInput, rate_period
from billing.rating.periods import calendar_month
from billing.rating.types import MeterTotals
from billing.simulate.core import CustomerTotals, rate_totals
from billing.simulate.fastrate import FastRater

D = Decimal
ROOT = Path(__file__).resolve().parents[2]
PERIOD = calendar_month(2026, 2)

EXTRA = """
plan: kitchen-sink
name: Every rule
effective_from: 2026-01-01T00:00:00Z
fees:
  - {type: flat, key: base, amount: "9.99"}
  - {type: per_seat, key: seat, unit_price: "12.345", min_seats: 2}
  - {type: per_seat, key: seat_arrears, unit_price: "3.333", timing: arrears}
meters:
  - {key: calls, event_type: llm.call}
  - {key: tokens, event_type: llm.call, aggregation: sum, property: input_tokens}
  - {key: steps, event_type: agent.step}
  - {key: gmv, event_type: sale, aggregation: sum, property: amount}
  - {key: fast, event_type: request}
charges:
  - key: calls
    meter: calls
    included: {per_seat: 10, pooled: 5}
    price: {model: graduated, tiers: [{up_to: 100, unit_price: "0.05", flat_fee: "1"}, {unit_price: "0.0333"}]}
    on_exhaustion: {policy: overage, spend_cap: "40.00"}
  - key: tokens
    meter: tokens
    price: {model: volume, tiers: [{up_to: 100000, unit_price: "0.0000021"}, {unit_price: "0.0000017", flat_fee: "2.5"}]}
  - key: steps
    meter: steps
    included: {pooled: 3}
    price: {model: package, package_size: 10, package_price: "0.99", free_units: 5}
    on_exhaustion: {policy: rate_limit, rate_limit: {limit: 5, window_seconds: 60}}
  - key: gmv
    meter: gmv
    price: {model: percentage, rate: "0.029", fixed_fee: "0.30", free_units: 2}
  - key: inference
    meter: calls
    price: {model: cost_plus, markup: "0.375"}
  - key: fast
    meter: fast
    included: {per_seat: 50}
    on_exhaustion: {policy: downgrade, model: cheap, unit_price: "0.001"}
credits:
  - {key: promo, amount: "7.77", applies_to: [calls, steps]}
  - {key: monthly, amount: "4.005", per_seat: true}
spend_cap: "150.00"
minimum_commitment: {amount: "60.00", applies_to: usage}
"""

BLOCK = """
plan: blocky
name: Block and all-commitment
effective_from: 2026-01-01T00:00:00Z
fees:
  - {type: flat, key: base, amount: "5"}
meters:
  - {key: calls, event_type: llm.call}
charges:
  - key: calls
    meter: calls
    included: {per_seat: 20}
    price: {model: per_unit, unit_price: "0.1"}
    on_exhaustion: {policy: block}
minimum_commitment: {amount: "25.00", applies_to: all}
"""


def all_plans():
    plans = [load_plan_file(p) for p in sorted((ROOT / "plans").glob("*.yaml"))]
    plans += [load_plan_file(p) for p in sorted((ROOT / "examples" / "plans").glob("*.yaml"))]
    return plans + [parse_plan_text(EXTRA), parse_plan_text(BLOCK)]


PLANS = all_plans()

amounts = st.integers(min_value=0, max_value=3000)
costs = st.decimals(min_value=0, max_value=500, places=6, allow_nan=False, allow_infinity=False)


@st.composite
def usage(draw):
    keys = {m.key for p in PLANS for m in p.meters}
    out = {}
    for key in sorted(keys):
        if draw(st.booleans()):
            units = D(draw(amounts)) * (D(draw(st.sampled_from([1, 1, 7, 1000]))))
            events = draw(st.integers(min_value=0, max_value=3000))
            tx = tuple(D(draw(st.integers(0, 500))) for _ in range(draw(st.integers(0, 4))))
            out[key] = MeterTotals(units, events, draw(costs), tx)
    return out


def check(plan, totals, seats):
    fast = FastRater(plan, PERIOD).rate(totals, seats)
    inv = rate_period(RatingInput(plan, "c", PERIOD, totals, seat_changes=[(PERIOD.start, seats)]))
    assert fast.total == inv.total, (plan.ref, totals, seats, inv.lines)
    assert fast.fees == sum((ln.amount for ln in inv.lines if ln.kind == "fee"), D(0))
    assert [(u.charge, u.units, u.included, u.billable, u.amount) for u in fast.usage] == \
        [(u.charge, u.units, u.included, u.billable, u.amount) for u in inv.usage]


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.ref)
@settings(max_examples=40, deadline=None)
@given(totals=usage(), seats=st.integers(min_value=0, max_value=12))
def test_fast_path_equals_rate_period(plan, totals, seats):
    check(plan, totals, seats)


def test_edges():
    for plan in PLANS:
        for seats in (0, 1, 3):
            check(plan, {}, seats)
            check(plan, {m.key: MeterTotals(D(100), 100, D("12.5")) for m in plan.meters}, seats)
            check(plan, {m.key: MeterTotals(D("1e6"), 10**6, D("9999.99")) for m in plan.meters}, seats)
            # per-value totals (a dimension price: model-gateway) are priced value by value
            by_model = (("claude-opus-4-1", D(1_500_000), D(40), 500), ("gpt-4o", D(600_000), D(3), 250),
                        ("mistral", D(50_000), D(1), 10), (None, D(7), D(0), 1))
            check(plan, {m.key: MeterTotals(D(2_150_007), 761, D(44), (), by_model) for m in plan.meters}, seats)


def test_rate_totals_uses_rate_period_outside_the_fast_path():
    plan = parse_plan_text(EXTRA)
    totals = {"calls": MeterTotals(D(500), 500, D(3))}
    changes = ((PERIOD.start, 1), (PERIOD.start.replace(day=15), 4))
    sim = rate_totals([plan], [CustomerTotals("a", totals, seats=1), CustomerTotals("b", totals, seat_changes=changes)],
                      PERIOD)
    a, b = sim.results[plan.ref]
    assert a.revenue == rate_period(RatingInput(plan, "a", PERIOD, totals, seat_changes=[(PERIOD.start, 1)])).total
    assert b.revenue == rate_period(RatingInput(plan, "b", PERIOD, totals, seat_changes=list(changes))).total
    assert b.seats == 4 and a.revenue != b.revenue


def test_memoized_results_stay_exact():
    """One rater over many customers (repeated usage hits the memo, unique usage turns it off)."""
    import random

    rng = random.Random(5)
    for plan in PLANS:
        rater = FastRater(plan, PERIOD)
        for i in range(400):
            calls = rng.randrange(0, 60) if i < 200 else rng.randrange(0, 10**6)  # repeats, then mostly unique
            totals = {m.key: MeterTotals(D(calls), calls, D(calls) * D("0.0123"), (D(calls % 7),)) for m in plan.meters}
            seats = rng.choice([1, 2, 3])
            for flag in (False, True):
                got = rater.rate(totals, seats, throttled_only=flag)
                inv = rate_period(RatingInput(plan, "c", PERIOD, totals, seat_changes=[(PERIOD.start, seats)]))
                assert got.total == inv.total, (plan.ref, calls, seats)
                if flag:
                    assert all(u.billable > 0 for u in got.usage)
