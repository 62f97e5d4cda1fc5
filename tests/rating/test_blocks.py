"""Graduated and volume prices billed per started block (``block_size``) and the first
tier's flat fee at zero usage (``flat_fee_at_zero``): exact against a plain reference
that walks the usage block by block, through the one charge arithmetic and the invoice."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import PlanInvalid, parse_plan_text
from billing.money import round_line
from billing.rating import arithmetic
from billing.rating.engine import RatingInput, rate_period
from billing.rating.periods import calendar_month
from billing.rating.types import LineKind, MeterTotals

D = Decimal
OCT = calendar_month(2026, 10)
SETTINGS = settings(max_examples=200, deadline=None)


def plan_text(model: str, block: int | None, rows: list[tuple[int | None, str, str]], at_zero: bool = False,
              included: int = 0) -> str:
    tiers = ", ".join(("{" + ("" if end is None else f"up_to: {end}, ") + f'unit_price: "{price}", flat_fee: "{fee}"}}')
                      for end, price, fee in rows)
    extra = ("" if block is None else f", block_size: {block}") + (", flat_fee_at_zero: true" if at_zero else "")
    inc = f"\n    included: {{pooled: {included}}}" if included else ""
    return f"""plan: blocks
name: Blocks
effective_from: 2026-01-01T00:00:00Z
meters:
  - {{key: tokens, event_type: llm.call, aggregation: sum, property: tokens}}
charges:
  - key: tokens
    meter: tokens{inc}
    price: {{model: {model}, tiers: [{tiers}]{extra}}}
"""


def reference(model: str, block: int, rows, units: Decimal, at_zero: bool) -> Decimal:
    """Walk the usage one block at a time: block n holds units (n x block, (n+1) x block];
    tier ends are whole blocks, so each block lies in one tier."""
    if units <= 0:
        return D(rows[0][2]) if at_zero else D(0)

    def tier_of(last_unit: Decimal) -> int:
        return next(i for i, (end, _, _) in enumerate(rows) if end is None or last_unit <= end)

    blocks: list[int] = []  # the tier of each started block
    n = 0
    while n * block < units:
        blocks.append(tier_of(D((n + 1) * block)))
        n += 1
    if model == "graduated":
        total = sum((block * D(rows[t][1]) for t in blocks), D(0))
        return total + sum((D(rows[t][2]) for t in set(blocks)), D(0))
    reached = tier_of(units)
    return len(blocks) * block * D(rows[reached][1]) + D(rows[reached][2])


prices = st.sampled_from(["0", "0.001", "0.0333", "0.5", "2", "7.125"])
fees = st.sampled_from(["0", "0", "1.5", "10"])


@st.composite
def cases(draw):
    model = draw(st.sampled_from(["graduated", "volume"]))
    block = draw(st.sampled_from([1, 3, 100, 1000]))
    ends = sorted(draw(st.sets(st.integers(1, 12), max_size=3)))
    rows = [(e * block, draw(prices), draw(fees)) for e in ends] + [(None, draw(prices), draw(fees))]
    at_zero = D(rows[0][2]) > 0 and draw(st.booleans())
    included = draw(st.sampled_from([0, 0, 7, 250]))
    units = draw(st.one_of(st.integers(0, 15 * block).map(D),
                           st.decimals(0, 15 * block, places=2, allow_nan=False, allow_infinity=False)))
    return model, block, rows, at_zero, included, units


@SETTINGS
@given(cases())
def test_blocks_rate_exactly_as_a_walk_over_started_blocks(case):
    model, block, rows, at_zero, included, units = case
    plan = parse_plan_text(plan_text(model, block, rows, at_zero, included), "blocks.yaml")
    charge = plan.compiled.charge("tokens")
    past = units - included if units > included else D(0)
    expected = round_line(reference(model, block, rows, past, at_zero), "USD")
    amount = arithmetic.charge_amount(charge, "USD", units, included=D(included))
    assert amount == expected
    detail = arithmetic.breakdown(charge, "USD", units, D(0), 0, (), D(included))
    assert detail.amount == amount
    invoice = rate_period(RatingInput(plan, "c", OCT, {"tokens": MeterTotals(units)}))
    assert sum((ln.amount for ln in invoice.lines if ln.kind == LineKind.USAGE), D(0)) == amount
    # more usage never lowers a graduated amount; the quota's peak covers the amount
    assert arithmetic.peak_exact(charge, units, included=D(included)) >= arithmetic.exact_charge(
        charge, units, included=D(included))


@pytest.mark.parametrize("model, units, expected", [
    # tiers 1-1000 @ 0.002, 1001+ @ 0.001, blocks of 100 units
    ("graduated", "1", "0.20"),      # one started block: 100 x 0.002
    ("graduated", "250", "0.60"),    # 3 blocks = 300 units x 0.002
    ("graduated", "1000", "2.00"),
    ("graduated", "1001", "2.10"),   # 2.00 + one block of the next tier: 100 x 0.001
    ("volume", "250", "0.60"),
    ("volume", "1001", "1.10"),      # 11 blocks = 1,100 units x 0.001
])
def test_worked_blocks(model, units, expected):
    rows = [(1000, "0.002", "0"), (None, "0.001", "0")]
    plan = parse_plan_text(plan_text(model, 100, rows), "blocks.yaml")
    assert arithmetic.charge_amount(plan.compiled.charge("tokens"), "USD", D(units)) == D(expected)


@pytest.mark.parametrize("model", ["graduated", "volume"])
@pytest.mark.parametrize("at_zero, expected", [(False, "0"), (True, "10.00")])
def test_first_tier_flat_fee_at_zero_usage_is_a_switch_off_by_default(model, at_zero, expected):
    rows = [(100, "0.5", "10"), (None, "0.25", "20")]
    plan = parse_plan_text(plan_text(model, None, rows, at_zero), "zero.yaml")
    charge = plan.compiled.charge("tokens")
    assert arithmetic.charge_amount(charge, "USD", D(0)) == D(expected)
    invoice = rate_period(RatingInput(plan, "c", OCT, {}))
    assert invoice.total == D(expected)
    # with usage the first tier's fee is billed either way
    assert arithmetic.charge_amount(charge, "USD", D(1)) == D("10.50")


@pytest.mark.parametrize("block, rows, at_zero, where, words", [
    ("0", [(1000, "1", "0")], False, "charges[0].price.block_size", "greater than 0"),
    ("-5", [(1000, "1", "0")], False, "charges[0].price.block_size", "greater than 0"),
    ("300", [(1000, "1", "0")], False, "charges[0].price.tiers[0].up_to", "whole number of blocks"),
    (None, [(1000, "1", "0")], True, "charges[0].price.tiers[0].flat_fee", "set a flat_fee"),
])
def test_bad_blocks_are_named_problems(block, rows, at_zero, where, words):
    text = plan_text("graduated", None, [*rows, (None, "0.5", "0")], at_zero)
    if block is not None:
        text = text.replace("tiers: [", f"block_size: {block}, tiers: [")
    with pytest.raises(PlanInvalid) as info:
        parse_plan_text(text, "bad.yaml")
    problems = info.value.problems
    assert [p.path for p in problems] == [where]
    assert words in problems[0].message and problems[0].line
