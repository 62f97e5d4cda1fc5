"""Consumable blocks and the zero-usage flat fee, shared by graduated and volume prices.

With ``block_size``, units are billed per started block (Kill Bill's consumable blocks):
a quantity is rounded up to whole blocks before its tier's unit price applies. Tier
limits are stated in units and are multiples of the block (the catalog checks it), so a
block never straddles two tiers: within each tier the rounded units never pass its end.
"""

from decimal import ROUND_CEILING, Decimal

ZERO = Decimal(0)


def started_blocks(units: Decimal, block_size: Decimal) -> Decimal:
    """How many blocks of ``block_size`` ``units`` start (a partial block counts)."""
    if units <= 0:
        return ZERO
    return (units / block_size).to_integral_value(rounding=ROUND_CEILING)


def billed_units(units: Decimal, block_size: Decimal | None) -> Decimal:
    """``units`` rounded up to whole started blocks (unchanged without a block size)."""
    if block_size is None or units <= 0:
        return units
    return started_blocks(units, block_size) * block_size
