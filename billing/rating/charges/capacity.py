"""Capacity across meters: the lowest tier in which every named meter's period peak fits
bills that tier's flat amount. Tiers {agents 5, memory_gb 16} 49.00, {agents 20, memory_gb
64} 199.00, unbounded 799.00: peaks of 3 agents and 20 GB fit the second tier = 199.00.

A period in which every peak is 0 bills nothing, unless ``flat_fee_at_zero`` bills the first
tier (Stripe's behaviour; Lago's is the default)."""

from decimal import Decimal

from billing.catalog.schema import CapacityPrice
from billing.money import dec_str
from billing.rating.types import Billable, Part

ZERO = Decimal(0)


def tier_index(price: CapacityPrice, peaks: tuple[Decimal, ...]) -> int | None:
    """The lowest tier every peak fits in (None: no usage and no zero-usage fee)."""
    if len(peaks) != len(price.meters):
        raise ValueError(f"a capacity price reads {len(price.meters)} meter peaks {list(price.meters)}, "
                         f"got {len(peaks)}")
    if not price.flat_fee_at_zero and all(p <= 0 for p in peaks):
        return None
    for i, tier in enumerate(price.tiers):
        if tier.up_to is None or all(peak <= tier.up_to[key] for key, peak in zip(price.meters, peaks)):
            return i
    raise ValueError("a capacity price's last tier is unbounded (the catalog checks it)")


def label(price: CapacityPrice, index: int) -> str:
    tier = price.tiers[index]
    if tier.up_to is None:
        return f"capacity tier {index + 1} (unbounded)"
    limits = ", ".join(f"{key} <= {dec_str(tier.up_to[key])}" for key in price.meters)
    return f"capacity tier {index + 1} ({limits})"


def rate(price: CapacityPrice, usage: Billable) -> list[Part]:
    index = tier_index(price, usage.peaks)
    if index is None:
        return []
    fee = price.tiers[index].flat_fee
    return [Part(label(price, index), Decimal(1), fee, fee)]


def peak_amount(price: CapacityPrice, peaks: tuple[Decimal, ...]) -> Decimal:
    """The highest amount any peaks up to these reach: the largest flat amount of the
    tiers up to the one they fit in (tiers need not be priced in increasing order)."""
    index = tier_index(price, peaks)
    if index is None:
        return ZERO
    return max(t.flat_fee for t in price.tiers[:index + 1])
