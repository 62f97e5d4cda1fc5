"""Display formatting shared by the terminal tables and the HTML pages (never used for
stored or exported amounts: those keep their exact Decimal text)."""

from __future__ import annotations

from decimal import Decimal

from billing.money import round_line
from billing.reports.stats import round_pct


def money(value: Decimal | None, currency: str = "USD", symbol: str = "") -> str:
    """``1234.5`` -> ``1,234.50`` (rounded once to the minor unit); ``-$25.00`` with a symbol."""
    if value is None:
        return ""
    rounded = round_line(value, currency)
    sign = "-" if rounded < 0 else ""
    return f"{sign}{symbol}{abs(rounded):,}"


def pct(value: Decimal | None, places: int = 1) -> str:
    rounded = round_pct(value, places)
    return "n/a" if rounded is None else f"{rounded:,}%"


def count(value: int | Decimal) -> str:
    return f"{value:,}"
