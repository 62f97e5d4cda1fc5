"""Package (blocks): ceil((units - free_units) / package_size) blocks at package_price."""

from decimal import ROUND_CEILING, Decimal

from billing.catalog.schema import PackagePrice
from billing.money import dec_str
from billing.rating.types import Billable, Part


def rate(price: PackagePrice, usage: Billable) -> list[Part]:
    chargeable = max(Decimal(0), usage.units - price.free_units)
    blocks = (chargeable / price.package_size).to_integral_value(rounding=ROUND_CEILING)
    if blocks == 0:
        return []
    label = f"{dec_str(blocks)} x {dec_str(price.package_size)} units"
    return [Part(label, blocks, price.package_price, blocks * price.package_price)]
