"""Volume tiers: the tier the total reaches prices EVERY unit, plus that tier's flat fee.
1-5 @ 7.00, 6-10 @ 6.50: 6 units = 6 x 6.50 = 39.00.

With ``block_size`` the units are billed per started block (tier limits are multiples of
the block, so the rounded units reach the same tier). With ``flat_fee_at_zero`` the first
tier's flat fee is billed at zero usage too (Stripe); by default nothing is (Lago)."""

from decimal import Decimal

from billing.catalog.schema import VolumePrice
from billing.money import dec_str
from billing.rating.charges.blocks import billed_units, started_blocks
from billing.rating.types import Billable, Part


def rate(price: VolumePrice, usage: Billable) -> list[Part]:
    if usage.units <= 0:
        first = price.tiers[0]
        if price.flat_fee_at_zero and first.flat_fee:
            return [Part("flat fee", Decimal(1), first.flat_fee, first.flat_fee)]
        return []
    tier = next(t for t in price.tiers if t.up_to is None or usage.units <= t.up_to)
    block = price.block_size
    units = billed_units(usage.units, block)
    label = "" if block is None else f"{dec_str(started_blocks(units, block))} x {dec_str(block)}-unit blocks"
    parts = [Part(label, units, tier.unit_price, units * tier.unit_price)]
    if tier.flat_fee:
        parts.append(Part("flat fee", Decimal(1), tier.flat_fee, tier.flat_fee))
    return parts
