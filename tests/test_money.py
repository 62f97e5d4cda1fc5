"""The one rounding rule and the currency table (ISO 4217 minor units)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from billing.money import from_minor, minor_units, round_line, to_minor


@pytest.mark.parametrize("currency, places", [
    ("USD", 2), ("EUR", 2), ("MGA", 2), ("ZZZ", 2),  # unknown codes: 2
    ("JPY", 0), ("KRW", 0), ("ISK", 0), ("UGX", 0), ("XOF", 0), ("XAF", 0), ("RWF", 0), ("PYG", 0), ("VND", 0),
    ("KWD", 3), ("BHD", 3), ("IQD", 3), ("LYD", 3), ("CLF", 4), ("usd", 2), ("jpy", 0),
])
def test_minor_units(currency, places):
    assert minor_units(currency) == places


@pytest.mark.parametrize("amount, currency, rounded", [
    ("0.005", "USD", "0.01"), ("-0.005", "USD", "-0.01"), ("0.0049999", "USD", "0.00"),
    ("1234.5", "UGX", "1235"), ("-1234.5", "XOF", "-1235"), ("1.2345", "KWD", "1.235"),
])
def test_half_away_from_zero(amount, currency, rounded):
    assert str(round_line(Decimal(amount), currency)) == rounded


def test_float_is_refused():
    with pytest.raises(TypeError):
        round_line(0.1, "USD")  # type: ignore[arg-type]


@given(st.integers(-10**15, 10**15), st.sampled_from(["USD", "JPY", "KWD", "UGX", "CLF"]))
def test_minor_units_round_trip(value, currency):
    amount = from_minor(value, currency)
    assert round_line(amount, currency) == amount
    assert to_minor(amount, currency) == value
