"""Graduated tiers: each tier prices only the units inside it; a tier's flat fee applies
once that tier is reached. 1-5 @ 7.00, 6-10 @ 6.50: 6 units = 5 x 7 + 1 x 6.50 = 41.50."""

from decimal import Decimal

from billing.catalog.schema import GraduatedPrice
from billing.money import dec_str
from billing.rating.types import Billable, Part


def rate(price: GraduatedPrice, usage: Billable) -> list[Part]:
    parts: list[Part] = []
    lower = Decimal(0)
    for tier in price.tiers:
        if usage.units <= lower:
            break
        upper = tier.up_to
        inside = (min(usage.units, upper) if upper is not None else usage.units) - lower
        span = f"{dec_str(lower + 1)}-{dec_str(upper)}" if upper is not None else f"{dec_str(lower + 1)}+"
        parts.append(Part(f"tier {span}", inside, tier.unit_price, inside * tier.unit_price))
        if tier.flat_fee:
            parts.append(Part(f"tier {span} flat fee", Decimal(1), tier.flat_fee, tier.flat_fee))
        if upper is None:
            break
        lower = upper
    return parts
