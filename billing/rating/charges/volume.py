"""Volume tiers: the tier the total reaches prices EVERY unit, plus that tier's flat fee.
1-5 @ 7.00, 6-10 @ 6.50: 6 units = 6 x 6.50 = 39.00."""

from decimal import Decimal

from billing.catalog.schema import VolumePrice
from billing.rating.types import Billable, Part


def rate(price: VolumePrice, usage: Billable) -> list[Part]:
    if usage.units <= 0:
        return []
    tier = next(t for t in price.tiers if t.up_to is None or usage.units <= t.up_to)
    parts = [Part("", usage.units, tier.unit_price, usage.units * tier.unit_price)]
    if tier.flat_fee:
        parts.append(Part("flat fee", Decimal(1), tier.flat_fee, tier.flat_fee))
    return parts
