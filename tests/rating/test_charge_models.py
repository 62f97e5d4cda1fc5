"""Charge models: exact amounts per model (``price_parts`` and whole plans) and properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import parse_plan_text
from billing.catalog.schema import (
    CostPlusPrice, GraduatedPrice, PackagePrice, PercentagePrice, PerUnitPrice, Tier, VolumePrice)
from billing.events import UsageEvent
from billing.rating.charges import price_parts
from billing.rating.engine import RatingInput, rate_period
from billing.rating.meters import aggregate
from billing.rating.periods import calendar_month
from billing.rating.types import Billable, MeterTotals

D = Decimal
PERIOD = calendar_month(2026, 10)
SETTINGS = settings(max_examples=100, deadline=None)


def total(price, units="0", *, cost="0", events=0, transactions=()) -> Decimal:
    parts = price_parts(price, Billable(D(units), D(cost), events, tuple(D(t) for t in transactions)))
    return sum((p.amount for p in parts), D(0))


def tiers(*rows) -> list[Tier]:
    """rows: (up_to | None, unit_price[, flat_fee])"""
    return [Tier(up_to=None if r[0] is None else D(r[0]), unit_price=D(r[1]),
                 flat_fee=D(r[2]) if len(r) > 2 else D(0)) for r in rows]


STANDARD = tiers((5, "7"), (10, "6.50"), (None, "6"))
WITH_FEES = tiers((5, "7", "10"), (10, "6.50", "5"), (None, "6", "2"))


# ---------------------------------------------------------------------------- graduated

@pytest.mark.parametrize("units, expected", [
    ("0", "0"),
    ("1", "7"),
    ("5", "35"),             # 5 x 7
    ("6", "41.50"),          # 5 x 7 + 1 x 6.50
    ("10", "67.50"),         # 35 + 5 x 6.50
    ("12", "79.50"),         # 35 + 32.50 + 2 x 6
    ("5.5", "38.25"),        # 35 + 0.5 x 6.50
])
def test_graduated_prices_each_tier_separately(units, expected):
    assert total(GraduatedPrice(model="graduated", tiers=STANDARD), units) == D(expected)


def test_graduated_parts_show_each_tier():
    parts = price_parts(GraduatedPrice(model="graduated", tiers=STANDARD), Billable(D(12)))
    assert [(p.quantity, p.unit_price, p.amount) for p in parts] == [
        (D(5), D(7), D(35)), (D(5), D("6.50"), D("32.50")), (D(2), D(6), D(12))]


@pytest.mark.parametrize("units, expected", [
    ("0", "0"),              # no tier reached, no flat fee
    ("3", "31"),             # 3 x 7 + 10
    ("5", "45"),             # 35 + 10 (tier 2 not reached)
    ("6", "56.50"),          # 41.50 + 10 + 5
    ("12", "96.50"),         # 79.50 + 10 + 5 + 2
])
def test_graduated_flat_fee_of_every_reached_tier(units, expected):
    assert total(GraduatedPrice(model="graduated", tiers=WITH_FEES), units) == D(expected)


# ------------------------------------------------------------------------------- volume

@pytest.mark.parametrize("units, expected", [
    ("0", "0"),
    ("5", "35"),             # 5 x 7
    ("6", "39"),             # 6 x 6.50: the reached tier prices every unit
    ("10", "65"),            # 10 x 6.50
    ("11", "66"),            # 11 x 6
])
def test_volume_prices_every_unit_at_the_reached_tier(units, expected):
    assert total(VolumePrice(model="volume", tiers=STANDARD), units) == D(expected)


@pytest.mark.parametrize("units, expected", [
    ("0", "0"),
    ("5", "45"),             # 35 + 10
    ("6", "44"),             # 39 + only the reached tier's 5
    ("12", "74"),            # 72 + 2
])
def test_volume_flat_fee_of_the_reached_tier_only(units, expected):
    assert total(VolumePrice(model="volume", tiers=WITH_FEES), units) == D(expected)


# ------------------------------------------------------------------------------ package

@pytest.mark.parametrize("units, free, expected_blocks", [
    ("0", "0", 0),
    ("1", "0", 1),
    ("1000", "0", 1),
    ("1001", "0", 2),
    ("2000", "0", 2),
    ("2001", "0", 3),        # partial blocks round up
    ("500", "500", 0),       # all free
    ("2001", "500", 2),      # 1501 chargeable -> 2 blocks
    ("2501", "500", 3),      # 2001 chargeable -> 3 blocks
])
def test_package_rounds_blocks_up_after_free_units(units, free, expected_blocks):
    price = PackagePrice(model="package", package_size=D(1000), package_price=D("1.00"), free_units=D(free))
    parts = price_parts(price, Billable(D(units)))
    assert total(price, units) == D(expected_blocks)
    if expected_blocks:
        assert [(p.quantity, p.unit_price) for p in parts] == [(D(expected_blocks), D("1.00"))]
    else:
        assert parts == []


# --------------------------------------------------------------------------- percentage

TXNS = ("100", "50.00", "10")


def test_percentage_rate_and_fixed_fee_from_aggregates():
    price = PercentagePrice(model="percentage", rate=D("0.029"), fixed_fee=D("0.30"))
    # 160 x 2.9% = 4.64; 3 transactions x 0.30 = 0.90
    assert total(price, "160", events=3) == D("5.54")
    assert total(PercentagePrice(model="percentage", rate=D("0.05")), "160", events=3) == D("8")


def test_percentage_min_and_max_per_transaction():
    # raw per transaction: 100 -> 2.90 + 0.30 = 3.20; 50 -> 1.45 + 0.30 = 1.75; 10 -> 0.29 + 0.30 = 0.59
    capped = PercentagePrice(model="percentage", rate=D("0.029"), fixed_fee=D("0.30"),
                             max_per_transaction=D("2.00"))
    assert total(capped, "160", events=3, transactions=TXNS) == D("4.34")      # 2.00 + 1.75 + 0.59
    floored = PercentagePrice(model="percentage", rate=D("0.029"), fixed_fee=D("0.30"),
                              min_per_transaction=D("1.00"))
    assert total(floored, "160", events=3, transactions=TXNS) == D("5.95")     # 3.20 + 1.75 + 1.00
    both = PercentagePrice(model="percentage", rate=D("0.029"), fixed_fee=D("0.30"),
                           min_per_transaction=D("1.00"), max_per_transaction=D("2.00"))
    assert total(both, "160", events=3, transactions=TXNS) == D("4.75")       # 2.00 + 1.75 + 1.00


def test_percentage_free_transactions_and_free_amount():
    free_first = PercentagePrice(model="percentage", rate=D("0.029"), fixed_fee=D("0.30"), free_units=1)
    # first transaction (100) free: 1.75 + 0.59
    assert total(free_first, "160", events=3, transactions=TXNS) == D("2.34")
    free_amount = PercentagePrice(model="percentage", rate=D("0.029"), fixed_fee=D("0.30"),
                                  free_amount=D("120"))
    # 100 entirely free (no fixed fee); 20 of the 50 free -> 30 x 2.9% + 0.30 = 1.17; 10 -> 0.59
    assert total(free_amount, "160", events=3, transactions=TXNS) == D("1.76")
    everything_free = PercentagePrice(model="percentage", rate=D("0.029"), fixed_fee=D("0.30"),
                                      free_amount=D("1000"))
    assert total(everything_free, "160", events=3, transactions=TXNS) == D(0)


@pytest.mark.parametrize("free_units, free_amount, transactions, expected", [
    # both allowances end together: 30 and 50 are the two free transactions (80 of the 100 free);
    # the 20 of free amount left ends with them, so 40 pays: 1.16 + 0.30
    (2, "100", ("30", "50", "40"), "1.46"),
    # 30 is free; 50 exhausts the free amount (30 left): its excess 20 pays 0.58 + 0.30; the
    # third free transaction is gone with the amount: 40 -> 1.46 and 10 -> 0.59
    (3, "60", ("30", "50", "40", "10"), "2.93"),
    # the free amount used up exactly by a free transaction: the next one pays in full
    (5, "30", ("30", "10"), "0.59"),
    # one free transaction, of any amount, when the free amount is larger
    (1, "1000", ("500", "10"), "0.59"),
])
def test_percentage_free_units_and_free_amount_end_together(free_units, free_amount, transactions, expected):
    price = PercentagePrice(model="percentage", rate=D("0.029"), fixed_fee=D("0.30"), free_units=free_units,
                            free_amount=D(free_amount))
    amounts = tuple(D(t) for t in transactions)
    assert total(price, str(sum(amounts)), events=len(amounts), transactions=amounts) == D(expected)


# ---------------------------------------------------------------- cost-plus and per-unit

def test_cost_plus_is_cost_times_one_plus_markup():
    price = CostPlusPrice(model="cost_plus", markup=D("0.25"))
    assert total(price, "999", cost="8.00") == D("10.00")
    assert total(price, "1", cost="0.0123") == D("0.015375")
    assert total(CostPlusPrice(model="cost_plus", markup=D(0)), cost="3.3") == D("3.3")


def test_per_unit_keeps_full_precision():
    assert total(PerUnitPrice(model="per_unit", unit_price=D("0.000003")), "1234") == D("0.003702")


# ------------------------------------------------------------------- through whole plans

PLAN_HEAD = """
plan: p
name: P
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: units, event_type: request, aggregation: sum, property: quantity}
charges:
  - key: c
    name: Usage
    meter: units
"""


def rate_units(price_yaml: str, units: str, *, cost: str = "0", transactions=()) -> tuple[Decimal, list]:
    plan = parse_plan_text(PLAN_HEAD + "    price: " + price_yaml + "\n")
    usage = {"units": MeterTotals(D(units), len(transactions) or 1, D(cost), tuple(D(t) for t in transactions))}
    inv = rate_period(RatingInput(plan, "cust", PERIOD, usage))
    return inv.total, [(ln.quantity, ln.unit_price, ln.amount) for ln in inv.lines]


def test_graduated_plan():
    tiers_yaml = ("{model: graduated, tiers: [{up_to: 5, unit_price: 7}, {up_to: 10, unit_price: 6.50},"
                  " {unit_price: 6}]}")
    total_, lines = rate_units(tiers_yaml, "6")
    assert total_ == D("41.50")
    assert lines == [(D(5), D(7), D("35.00")), (D(1), D("6.50"), D("6.50"))]


def test_volume_plan():
    tiers_yaml = ("{model: volume, tiers: [{up_to: 5, unit_price: 7}, {up_to: 10, unit_price: 6.50},"
                  " {unit_price: 6}]}")
    total_, lines = rate_units(tiers_yaml, "6")
    assert total_ == D("39.00")
    assert lines == [(D(6), D("6.50"), D("39.00"))]


def test_package_plan():
    assert rate_units("{model: package, package_size: 1000, package_price: 1}", "2001")[0] == D("3.00")
    assert rate_units("{model: package, package_size: 1000, package_price: 1, free_units: 1500}",
                      "2001")[0] == D("1.00")


def test_cost_plus_plan_rounds_the_line_once():
    # 61.50 x 1.25 = 76.875 -> 76.88 (half away from zero)
    assert rate_units("{model: cost_plus, markup: 0.25}", "5000", cost="61.50")[0] == D("76.88")


def test_percentage_plan_from_real_events():
    plan = parse_plan_text("""
plan: payments
name: Payments
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: volume, event_type: payment, aggregation: sum, property: amount}
charges:
  - key: fees
    meter: volume
    price: {model: percentage, rate: 0.029, fixed_fee: 0.30, min_per_transaction: 1.00,
            max_per_transaction: 2.00}
""")
    t0 = datetime(2026, 10, 5, tzinfo=UTC)
    # listed out of time order: per-transaction rules follow the timestamps (100, 50.00, 10)
    events = [UsageEvent(id=f"p{i}", customer="c", type="payment", timestamp=t0 + timedelta(hours=h),
                         properties={"amount": a}) for i, (h, a) in enumerate([(3, "10"), (1, "100"), (2, "50.00")])]
    usage = aggregate(plan, events, PERIOD.start, PERIOD.end)
    assert usage["volume"].transactions == (D(100), D("50.00"), D(10))
    inv = rate_period(RatingInput(plan, "c", PERIOD, usage))
    # base 160 x 2.9% = 4.64, fixed 3 x 0.30 = 0.90, clamp (2.00-3.20) + (1.00-0.59) = -0.79
    assert [ln.amount for ln in inv.lines] == [D("4.64"), D("0.90"), D("-0.79")]
    assert inv.total == D("4.75")


# ---------------------------------------------------------------------------- properties

money = st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False, allow_infinity=False)
fine_money = st.decimals(min_value=0, max_value=10, places=6, allow_nan=False, allow_infinity=False)
quantities = st.decimals(min_value=0, max_value=100_000, places=3, allow_nan=False, allow_infinity=False)


@st.composite
def tier_lists(draw, non_decreasing: bool = False):
    bounds = sorted(draw(st.sets(st.integers(1, 5000), min_size=0, max_size=4)))
    prices = draw(st.lists(fine_money, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    fees = draw(st.lists(money, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    if non_decreasing:
        prices, fees = sorted(prices), sorted(fees)
    ups = [D(b) for b in bounds] + [None]
    return [Tier(up_to=u, unit_price=p, flat_fee=f) for u, p, f in zip(ups, prices, fees)]


@SETTINGS
@given(unit_price=fine_money, flat_fee=money, units=quantities)
def test_graduated_equals_volume_with_one_unbounded_tier(unit_price, flat_fee, units):
    one = [Tier(up_to=None, unit_price=unit_price, flat_fee=flat_fee)]
    graduated = total(GraduatedPrice(model="graduated", tiers=one), units)
    assert graduated == total(VolumePrice(model="volume", tiers=one), units)
    assert graduated == (units * unit_price + flat_fee if units > 0 else 0)


@SETTINGS
@given(tiers_=tier_lists(), a=quantities, b=quantities)
def test_graduated_is_non_decreasing(tiers_, a, b):
    lo, hi = sorted((a, b))
    price = GraduatedPrice(model="graduated", tiers=tiers_)
    assert total(price, lo) <= total(price, hi)


@SETTINGS
@given(tiers_=tier_lists(non_decreasing=True), a=quantities, b=quantities)
def test_volume_is_non_decreasing_when_tier_prices_do_not_fall(tiers_, a, b):
    # (with falling tier prices volume pricing is NOT monotone: 5 x 7 = 35 > 6 x 5)
    lo, hi = sorted((a, b))
    price = VolumePrice(model="volume", tiers=tiers_)
    assert total(price, lo) <= total(price, hi)


@SETTINGS
@given(size=st.integers(1, 5000), price=money, free=st.integers(0, 3000), a=quantities, b=quantities)
def test_package_is_ceil_blocks_and_non_decreasing(size, price, free, a, b):
    model = PackagePrice(model="package", package_size=D(size), package_price=price, free_units=D(free))
    blocks = (max(D(0), a - free) / D(size)).to_integral_value(rounding=ROUND_CEILING)
    assert total(model, a) == blocks * price
    lo, hi = sorted((a, b))
    assert total(model, lo) <= total(model, hi)


@SETTINGS
@given(size=st.integers(1, 5000), price=money, n=st.integers(0, 10**6))
def test_package_without_free_units_is_ceil_quantity_over_size(size, price, n):
    model = PackagePrice(model="package", package_size=D(size), package_price=price)
    assert total(model, D(n)) == D(-(-n // size)) * price


@SETTINGS
@given(unit_price=fine_money, a=quantities, b=quantities)
def test_per_unit_is_exact_and_non_decreasing(unit_price, a, b):
    model = PerUnitPrice(model="per_unit", unit_price=unit_price)
    assert total(model, a) == a * unit_price
    lo, hi = sorted((a, b))
    assert total(model, lo) <= total(model, hi)
