"""Pricing advice (``billing.simulate.advise``): the suggested lever value, re-rated with
``rate_period`` itself, reaches the target margin and one step less generous does not;
segments and percentiles; bad targets and levers are named errors."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from billing.catalog import parse_plan_text
from billing.catalog.loader import MAX_NUMBER
from billing.rating.engine import RatingInput, rate_period
from billing.rating.periods import calendar_month
from billing.rating.types import MeterTotals
from billing.simulate.advise import AdviceError, advise, check_target, segment_members, solve
from billing.simulate.core import CustomerTotals
from billing.simulate.price_lever import Lever, LeverError, current_value, default_lever, parse_lever, with_value

D = Decimal
PERIOD = calendar_month(2026, 10)

PLAN = """
plan: advised
name: Advised
effective_from: 2026-01-01T00:00:00Z
fees:
  - {{type: flat, key: base, amount: "{base}"}}
  - {{type: per_seat, key: seat, unit_price: "{seat}"}}
meters:
  - {{key: calls, event_type: llm.call}}
charges:
  - key: calls
    meter: calls
    included: {{{included_field}: {included}}}
{price_line}    on_exhaustion: {policy}
{extra}
"""


def plan_text(base="10", seat="0", included_field="pooled", included="100", price='{model: per_unit, unit_price: "0.05"}',
              policy="{policy: overage}", extra="") -> str:
    price_line = f"    price: {price}\n" if "downgrade" not in policy else ""  # a slow tier bills its own price
    return PLAN.format(base=base, seat=seat, included_field=included_field, included=included, price_line=price_line,
                       policy=policy, extra=extra)


def customer(name: str, calls: int, cost: str, seats: int = 1, segment: str = "s") -> CustomerTotals:
    return CustomerTotals(name, {"calls": MeterTotals(D(calls), calls, D(cost))}, D(cost), segment, seats)


def rerated(plan, customers) -> tuple[Decimal, Decimal]:
    """Revenue and cost of a group, every customer rated by ``rate_period`` (not the fast path)."""
    revenue = sum((rate_period(RatingInput(plan, c.customer, PERIOD, c.usage,
                                           seat_changes=[(PERIOD.start, c.seats)])).total for c in customers), D(0))
    return revenue, sum((c.cost for c in customers), D(0))


def reaches(revenue: Decimal, cost: Decimal, target: Decimal) -> bool:
    if revenue <= 0:
        return cost == 0 and revenue == 0
    with localcontext() as ctx:
        ctx.prec = 80
        return (revenue - cost) / revenue * 100 >= target


# --------------------------------------------------------------------------- property

@st.composite
def plans(draw):
    price = draw(st.sampled_from([
        '{model: per_unit, unit_price: "0.05"}',
        '{model: package, package_size: 10, package_price: "0.4"}',
        '{model: graduated, tiers: [{up_to: 50, unit_price: "0.1"}, {unit_price: "0.02"}]}',
        '{model: volume, tiers: [{up_to: 50, unit_price: "0.1"}, {unit_price: "0.03"}]}']))
    policy = draw(st.sampled_from(["{policy: overage}", '{policy: overage, spend_cap: "7.5"}',
                                   '{policy: downgrade, model: small, unit_price: "0.01"}']))
    extra = draw(st.sampled_from(["", 'minimum_commitment: {amount: "15"}', 'spend_cap: "40"',
                                  'credits:\n  - {key: monthly, amount: "2"}']))
    return parse_plan_text(plan_text(base=draw(st.sampled_from(["0", "5", "19.99"])),
                                     seat=draw(st.sampled_from(["0", "3.5"])),
                                     included_field=draw(st.sampled_from(["pooled", "per_seat"])),
                                     included=draw(st.sampled_from(["0", "20", "150"])), price=price,
                                     policy=policy, extra=extra))


@st.composite
def populations(draw):
    n = draw(st.integers(1, 6))
    # heavy-tailed: most customers light, a few far heavier
    return [customer(f"c{i}", draw(st.sampled_from([0, 3, 40, 120, 900, 5000])),
                     str(draw(st.decimals(min_value=0, max_value=300, places=4))), draw(st.integers(0, 3)),
                     draw(st.sampled_from(["light", "heavy"])))
            for i in range(n)]


@settings(max_examples=150, deadline=None)
@given(plan=plans(), people=populations(), kind=st.sampled_from(["fee", "unit_price", "overage", "included"]),
       target=st.integers(-100, 99), segment=st.sampled_from(["all", "P0", "P50", "P90", "P100", "light"]))
def test_the_suggested_value_reaches_the_target_and_one_step_less_does_not(plan, people, kind, target, segment):
    assume(segment != "light" or any(c.segment == "light" for c in people))
    key = {"fee": "base", "unit_price": "calls", "overage": "calls", "included": "calls"}[kind]
    try:
        lever = parse_lever(f"{kind}:{key}", plan)
    except LeverError:  # unit_price of a tiered charge: the plan has no such lever
        assume(False)
    step = D("0.01") if lever.is_money else D(1)
    members = segment_members(segment, people)
    sol = solve(plan, members, PERIOD, lever, D(target), step)
    event(f"{kind}: {sol.status}")
    if sol.status == "reached":
        assert sol.value % step == 0
        assert reaches(*rerated(with_value(plan, lever, sol.value), members), D(target))
        if lever.increasing and sol.value > 0:
            assert not reaches(*rerated(with_value(plan, lever, sol.value - step), members), D(target))
        if not lever.increasing:
            assert not reaches(*rerated(with_value(plan, lever, sol.value + step), members), D(target))
    elif sol.status == "unreachable":
        extreme = MAX_NUMBER if lever.increasing else D(0)
        assert not reaches(*rerated(with_value(plan, lever, extreme), members), D(target))
    else:
        assert sol.status == "unbounded" and not lever.increasing
        assert reaches(*rerated(with_value(plan, lever, MAX_NUMBER), members), D(target))


# ----------------------------------------------------------------------------- examples

def test_flat_fee_worked_example_rounds_up_to_the_cent():
    # one customer: 300 calls (200 past 100 included at 0.05 = 10.00), provider cost 9.00.
    # 70% margin needs revenue 30.00 -> a fee of 20.00; 71% needs 31.0344.. -> 21.04 (rounded up)
    plan = parse_plan_text(plan_text())
    people = [customer("a", 300, "9")]
    lever = default_lever(plan)
    assert lever == Lever("fee", "base")
    assert solve(plan, people, PERIOD, lever, D(70), D("0.01")).value == D("20.00")
    sol = solve(plan, people, PERIOD, lever, D(71), D("0.01"))
    assert sol.value == D("21.04") and sol.at_value.revenue == D("31.04")
    assert sol.one_step_less.revenue == D("31.03") and not sol.one_step_less.reaches(D(71))
    assert solve(plan, people, PERIOD, lever, D(0), D("0.01")).value == D(0)  # usage alone covers 9.00


def test_included_units_is_the_largest_amount_that_still_reaches_the_target():
    # fee 10, 0.05 a call past the included, 300 calls, cost 6: 70% needs 20.00 = 10 + 0.05 x (300 - inc)
    plan = parse_plan_text(plan_text())
    sol = solve(plan, [customer("a", 300, "6")], PERIOD, Lever("included", "calls"), D(70), D(1))
    assert sol.value == D(100) and sol.at_value.revenue == D(20)
    assert sol.one_step_less.revenue == D("19.95") and not sol.one_step_less.reaches(D(70))
    # at cost 9 the target needs 30.00: more than even 0 included units bring (25.00)
    short = solve(plan, [customer("a", 300, "9")], PERIOD, Lever("included", "calls"), D(70), D(1))
    assert short.status == "unreachable" and short.limit.revenue == D(25)


def test_unreachable_behind_a_spend_cap_and_unbounded_included():
    plan = parse_plan_text(plan_text(base="0", policy='{policy: overage, spend_cap: "5"}'))
    sol = solve(plan, [customer("a", 300, "9")], PERIOD, Lever("unit_price", "calls"), D(50), D("0.01"))
    assert sol.status == "unreachable" and sol.limit.revenue == D(5) and sol.value is None
    rich = parse_plan_text(plan_text(base="100"))
    assert solve(rich, [customer("a", 300, "9")], PERIOD, Lever("included", "calls"), D(50), D(1)).status == "unbounded"


def test_percentile_segments_take_the_nearest_rank_by_cost():
    people = [customer(f"c{i}", 10, str(cost)) for i, cost in enumerate([5, 1, 9, 3, 7, 2, 8, 4, 6, 10])]
    pick = lambda label: segment_members(label, people)[0].cost  # noqa: E731
    assert [pick(p) for p in ("P0", "P10", "P11", "P50", "P90", "P91", "P100")] == [1, 1, 2, 5, 9, 10, 10]
    assert len(segment_members("all", people)) == 10
    with pytest.raises(AdviceError, match="P0 to P100"):
        segment_members("P101", people)
    with pytest.raises(AdviceError, match="one of the population's: s"):
        segment_members("gold", people)


@pytest.mark.parametrize("target, message", [("100", "no price reaches a margin of 100%"),
                                             ("250", "no price reaches"), ("-100.5", "below -100%"),
                                             ("NaN", "not a number")])
def test_bad_targets_are_refused(target, message):
    with pytest.raises(AdviceError, match=message):
        check_target(D(target))


def test_levers_the_plan_does_not_have_name_what_it_has():
    plan = parse_plan_text(plan_text(policy="{policy: block}"))
    with pytest.raises(LeverError, match="no fee 'nope' \\(its fees: base, seat\\)"):
        parse_lever("fee:nope", plan)
    with pytest.raises(LeverError, match="no charge 'x' \\(its charges: calls\\)"):
        parse_lever("overage:x", plan)
    with pytest.raises(LeverError, match="blocks past its included units"):
        parse_lever("overage:calls", plan)
    with pytest.raises(LeverError, match="write one of"):
        parse_lever("price", plan)
    tiered = parse_plan_text(plan_text(price='{model: graduated, tiers: [{up_to: 5, unit_price: "1"}, {unit_price: "2"}]}'))
    with pytest.raises(LeverError, match="solve overage:calls"):
        parse_lever("unit_price:calls", tiered)
    assert current_value(tiered, parse_lever("overage:calls", tiered)) == D(2)
    seat_plan = parse_plan_text(plan_text(included_field="per_seat", included="7"))
    assert current_value(seat_plan, parse_lever("included:calls", seat_plan)) == D(7)
    assert with_value(seat_plan, Lever("included", "calls"), D(9)).charges[0].included.per_seat == D(9)
    assert with_value(seat_plan, Lever("fee", "seat"), D(4)).fees[1].unit_price == D(4)


def test_advise_reports_every_segment_and_rates_the_population():
    plan = parse_plan_text(plan_text())
    people = [customer("a", 300, "9", segment="light"), customer("b", 3000, "150", segment="heavy")]
    advice = advise(plan, people, PERIOD, default_lever(plan), D(70), "heavy")
    assert [s.name for s in advice.segments] == ["heavy", "all", "light", "P50", "P90", "P99"]
    assert advice.chosen.target.value == advice.suggested_plan.fees[0].amount
    revenue, cost = rerated(advice.suggested_plan, people)
    assert (advice.population_suggested.revenue, advice.population_suggested.cost) == (revenue, cost)
    data = advice.to_json()
    assert data["suggestion"]["target"]["status"] == "reached" and data["lever"]["text"] == "fee:base"
    assert len(data["segments"]) == 6
