"""Money rules: Decimal only, one rounding function, currency minor units.

Rule (documented once, used everywhere): an amount is rounded **once per invoice
line**, to the currency's minor unit, with ``ROUND_HALF_UP`` (0.005 -> 0.01,
-0.005 -> -0.01: half away from zero). Unit prices and intermediate amounts keep
full precision. An invoice total is the exact sum of its rounded lines.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

# ISO 4217 minor units (List One, 2026): every active currency whose minor unit is not
# 2 decimals. Every other code has 2.
_MINOR_UNITS: dict[str, int] = {
    # no minor unit
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    # thousandths
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # ten-thousandths (units of account)
    "CLF": 4, "UYW": 4,
}

# ISO 4217 List One (2026): the active codes of currencies and funds. Left out: precious
# metals (XAU, XAG, XPD, XPT), bond-market and SDR units (XBA-XBD, XDR, XSU, XUA), the test
# and no-currency codes (XTS, XXX), and codes withdrawn since 2020 (HRK, CUC, SLL, ZWL, ANG).
CURRENCIES: frozenset[str] = frozenset("""
AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD
CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW
KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN
NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD
SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW
UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
""".split())

ZERO = Decimal(0)
ONE = Decimal(1)


def minor_units(currency: str) -> int:
    """Number of decimal places of the currency's minor unit (USD 2, JPY 0, KWD 3)."""
    return _MINOR_UNITS.get(currency.upper(), 2)


@lru_cache(maxsize=256)
def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-minor_units(currency))


_ROUNDING = Context(prec=50, rounding=ROUND_HALF_UP)


def round_line(amount: Decimal, currency: str) -> Decimal:
    """THE rounding function: one invoice line's amount to the currency's minor unit.

    Half away from zero (ROUND_HALF_UP in Decimal terms), applied once per line.
    """
    if type(amount) is not Decimal and not isinstance(amount, Decimal):
        raise TypeError(f"money must be Decimal, got {type(amount).__name__}")
    return amount.quantize(quantum(currency), context=_ROUNDING)


def to_minor(amount: Decimal, currency: str) -> int:
    """An already-rounded amount as an integer count of minor units (Stripe's format)."""
    rounded = round_line(amount, currency)
    if rounded != amount:
        raise ValueError(f"{amount} is not rounded to the minor unit of {currency}")
    return int(rounded.scaleb(minor_units(currency)))


def from_minor(value: int, currency: str) -> Decimal:
    return Decimal(value).scaleb(-minor_units(currency))


def to_decimal(value: Any) -> Decimal:
    """Parse a money or quantity value without ever going through binary float.

    Accepts Decimal, int, and str; a float is converted through its shortest repr
    (``str(0.1) == '0.1'``) so JSON numbers keep the value the user typed.
    """
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise InvalidOperation(f"not a number: {value!r}")
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        result = Decimal(value.strip())
    else:
        raise InvalidOperation(f"not a number: {value!r}")
    if not result.is_finite():
        raise InvalidOperation(f"not a finite number: {value!r}")
    return result


def threshold_problem(amount: Decimal, currency: str) -> str | None:
    """Why ``amount`` cannot be an invoicing threshold in ``currency`` (None: it can): it
    must be at least the currency's minor unit, with no finer decimals (a plan's or a
    customer's ``invoice_when_due_reaches``)."""
    smallest = quantum(currency)
    if amount < smallest:
        return f"must be at least the minor unit of {currency} ({smallest})"
    if amount != amount.quantize(smallest):
        return f"has more decimals than the minor unit of {currency} ({smallest})"
    return None


def fmt(amount: Decimal, currency: str) -> str:
    """Plain decimal string with exactly the currency's minor-unit places ('41.50')."""
    return f"{round_line(amount, currency):.{minor_units(currency)}f}"


def dec_str(value: Decimal) -> str:
    """Decimal as a plain string without exponent notation ('0.000003', not '3E-6')."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
