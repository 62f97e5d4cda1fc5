"""Cost-plus: provider cost of the billable usage x (1 + markup). Quantity is the cost."""

from decimal import Decimal

from billing.catalog.schema import CostPlusPrice
from billing.money import dec_str
from billing.rating.types import Billable, Part


def rate(price: CostPlusPrice, usage: Billable) -> list[Part]:
    factor = Decimal(1) + price.markup
    return [Part(f"provider cost + {dec_str(price.markup * 100)}%", usage.cost, factor, usage.cost * factor)]
