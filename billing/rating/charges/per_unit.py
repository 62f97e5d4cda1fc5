"""Per-unit price: every billable unit at one price."""

from billing.catalog.schema import PerUnitPrice
from billing.rating.types import Billable, Part


def rate(price: PerUnitPrice, usage: Billable) -> list[Part]:
    return [Part("", usage.units, price.unit_price, usage.units * price.unit_price)]
