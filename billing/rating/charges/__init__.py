"""Charge models: one small module each, one signature ``rate(price, Billable) -> list[Part]``,
picked by the price's ``model`` from this registry."""

from collections.abc import Callable

from billing.rating.charges import capacity, cost_plus, dimension, graduated, package, per_unit, percentage, volume
from billing.rating.types import Billable, Part

CHARGE_MODELS: dict[str, Callable[..., list[Part]]] = {
    "per_unit": per_unit.rate,
    "graduated": graduated.rate,
    "volume": volume.rate,
    "package": package.rate,
    "percentage": percentage.rate,
    "cost_plus": cost_plus.rate,
    "capacity": capacity.rate,
    "dimension": dimension.rate,
}


def price_parts(price, usage: Billable) -> list[Part]:
    return CHARGE_MODELS[price.model](price, usage)
