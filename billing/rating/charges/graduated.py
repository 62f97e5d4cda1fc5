"""Graduated tiers: each tier prices only the units inside it; a tier's flat fee applies
once that tier is reached. 1-5 @ 7.00, 6-10 @ 6.50: 6 units = 5 x 7 + 1 x 6.50 = 41.50.

With ``block_size`` the units inside each tier are billed per started block (tiers of
units, blocks of 100: 250 units in tier 1-1000 bill 300). With ``flat_fee_at_zero`` the
first tier's flat fee is billed at zero usage too (Stripe); by default it is not (Lago)."""

from decimal import Decimal

from billing.catalog.schema import GraduatedPrice
from billing.money import dec_str
from billing.rating.charges.blocks import billed_units, started_blocks
from billing.rating.types import Billable, Part


def _span(lower: Decimal, upper: Decimal | None) -> str:
    return f"{dec_str(lower + 1)}-{dec_str(upper)}" if upper is not None else f"{dec_str(lower + 1)}+"


def rate(price: GraduatedPrice, usage: Billable) -> list[Part]:
    parts: list[Part] = []
    block = price.block_size
    if usage.units <= 0:
        first = price.tiers[0]
        if price.flat_fee_at_zero and first.flat_fee:
            span = _span(Decimal(0), first.up_to)
            parts.append(Part(f"tier {span} flat fee", Decimal(1), first.flat_fee, first.flat_fee))
        return parts
    lower = Decimal(0)
    for tier in price.tiers:
        if usage.units <= lower:
            break
        upper = tier.up_to
        inside = billed_units((min(usage.units, upper) if upper is not None else usage.units) - lower, block)
        span = _span(lower, upper)
        label = f"tier {span}" if block is None else \
            f"tier {span}, {dec_str(started_blocks(inside, block))} x {dec_str(block)}-unit blocks"
        parts.append(Part(label, inside, tier.unit_price, inside * tier.unit_price))
        if tier.flat_fee:
            parts.append(Part(f"tier {span} flat fee", Decimal(1), tier.flat_fee, tier.flat_fee))
        if upper is None:
            break
        lower = upper
    return parts
