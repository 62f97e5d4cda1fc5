"""Dated overrides of a plan version (``catalog.overrides``): the effective plan at an
instant, rated through the real engine, equals a plain reference computed here from the
values in force; and every bad override is a named problem."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import parse_plan_text
from billing.catalog.overrides import Override, effective_plan, override_problems
from billing.money import round_line
from billing.rating.engine import RatingInput, rate_period
from billing.rating.periods import calendar_month
from billing.rating.types import MeterTotals

D = Decimal
NOV = calendar_month(2026, 11)
T0 = datetime(2026, 1, 1, tzinfo=UTC)

PLAN = parse_plan_text("""plan: base
name: Base
effective_from: 2026-01-01T00:00:00Z
fees:
  - {type: flat, key: platform, amount: "20.00"}
meters:
  - {key: calls, event_type: llm.call}
charges:
  - key: calls
    meter: calls
    included: {pooled: 100}
    price: {model: per_unit, unit_price: "0.01"}
    on_exhaustion: {policy: overage, spend_cap: "50.00"}
""")

prices = st.decimals(min_value=0, max_value=3, places=4).map(str)
amounts = st.decimals(min_value=0, max_value=500, places=2).map(str)
days = st.integers(0, 500)


@st.composite
def dated(draw, path: str, values) -> list[Override]:
    """Non-overlapping dated overrides of one path."""
    bounds = sorted(draw(st.sets(days, min_size=1, max_size=6)))
    out = []
    for start, end in zip(bounds, [*bounds[1:], None]):
        if draw(st.booleans()):  # the last one has no end
            out.append(Override(path, draw(values), T0 + timedelta(days=start),
                                None if end is None else T0 + timedelta(days=end)))
    return out


def in_force(overrides: list[Override], at: datetime, default):
    """The reference: the value of the one override in force at ``at``, else the plan's."""
    for o in overrides:
        if o.starts_at <= at and (o.ends_at is None or at < o.ends_at):
            return o.value
    return default


@settings(max_examples=80, deadline=None)
@given(price_o=dated("charges/calls/price/unit_price", prices), included_o=dated("charges/calls/included", amounts.map(
    lambda n: {"pooled": n})), fee_o=dated("fees/platform/amount", amounts), cap_o=dated(
    "charges/calls/on_exhaustion/spend_cap", st.none() | amounts), at=days, units=st.integers(0, 20_000))
def test_effective_plan_rates_as_the_values_in_force(price_o, included_o, fee_o, cap_o, at, units):
    overrides = [*price_o, *included_o, *fee_o, *cap_o]
    assert override_problems(PLAN, overrides) == []
    when = T0 + timedelta(days=at)
    plan = effective_plan(PLAN, overrides, when)
    invoice = rate_period(RatingInput(plan, "c", NOV, {"calls": MeterTotals(D(units), units)}))

    price = D(in_force(price_o, when, "0.01"))
    included = D(in_force(included_o, when, {"pooled": "100"})["pooled"])
    fee = D(in_force(fee_o, when, "20.00"))
    cap = in_force(cap_o, when, "50.00")
    usage = round_line(max(D(0), units - included) * price, "USD")
    if cap is not None:
        usage = min(usage, D(cap))
    assert invoice.total == fee + usage
    touched = {o.path.split("/")[1] for o in overrides if o.in_force(when)}
    assert all("(contract)" in ln.description for ln in invoice.lines if ln.key in touched)
    assert not any("(contract)" in ln.description for ln in invoice.lines if ln.key not in touched)


def test_no_override_in_force_is_the_plan_itself():
    o = Override("spend_cap", "5", T0 + timedelta(days=10), T0 + timedelta(days=20))
    assert effective_plan(PLAN, [o], T0) is PLAN
    assert effective_plan(PLAN, [o], T0 + timedelta(days=20)) is PLAN
    assert effective_plan(PLAN, [o], T0 + timedelta(days=10)).spend_cap == D(5)


def test_bad_overrides_are_each_a_named_problem():
    at = T0
    problems = override_problems(PLAN, [
        Override("charges/nope/price", {"model": "per_unit", "unit_price": "1"}, at),
        Override("fees/platform/unit_price", "1", at),
        Override("charges/calls/price/tiers/0/unit_price", "1", at),
        Override("charges/calls/price", {"model": "graduated", "tiers": [{"up_to": 5}, {"up_to": 3}]}, at),
        Override("credits/none/amount", "1", at),
        Override("charges/calls/meter", "other", at),
        Override("spend_cap", "1", at, at - timedelta(days=1)),
        Override("charges/calls/included/pooled", "-4", at),
    ])
    assert problems == [
        "overrides[0].path: plan base@v1 has no charge 'nope' (its charges: calls)",
        "overrides[1].value: fees[0].unit_price: unknown key (check the spelling; see plans/README.md)",
        "overrides[2].path: charges/calls/price/tiers: the plan has no value here to override a part of; "
        "override the whole charges/calls/price/tiers/0 instead",
        "overrides[3].value: charges[0].price.tiers[1].up_to: up_to must be greater than 5 (the previous tier's); "
        "charges[0].price.tiers[1].up_to: the last tier must be unbounded (up_to: null)",
        "overrides[4].path: plan base@v1 has no credit 'none' (its credits: none)",
        "overrides[5].path: charge field 'meter' cannot be overridden (one of: price, included, on_exhaustion)",
        "overrides[6].ends_at: must be after starts_at (2026-01-01T00:00:00+00:00)",
        "overrides[7].value: charges[0].included.pooled: Input should be greater than or equal to 0",
    ]
