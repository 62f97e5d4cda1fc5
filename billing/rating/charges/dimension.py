"""Dimension price: one charge priced by a property's value. Each value's units are priced
by its own price (``prices[value]``, else ``default``) as one quantity, and each gives its
own parts, labelled with the value (``model gpt-4o``; ``model (none)`` for events without
it). The charge's included units are drawn from the values in the order ``prices`` lists
them, then from the other values in text order, then from usage known only as a total (no
value: live holds, simulations), each value's cost and events shared as a whole charge's
are (``past.past_included``).

Example: prices {gpt-4o: 0.01, o3: 0.04}, default 0.02, 1,000 included; 600 gpt-4o, 700 o3
and 300 mistral units: gpt-4o takes 600 included units, o3 the other 400 and bills 300 x
0.04 = 12.00, mistral bills 300 x 0.02 = 6.00."""

from decimal import Decimal

from billing.catalog.schema import DimensionPrice
from billing.rating.charges.past import past_included
from billing.rating.types import Billable, Part

ZERO = Decimal(0)


def drawing_order(price: DimensionPrice, groups) -> list:
    """``groups`` (value, units, cost, events) in the order included units are drawn."""
    listed = {value: i for i, value in enumerate(price.prices)}
    return sorted(groups, key=lambda g: (g[0] is None, g[0] not in listed, listed.get(g[0], 0), g[0] or ""))


def rate(price: DimensionPrice, usage: Billable) -> list[Part]:
    from billing.rating.charges import price_parts

    left = usage.included
    parts: list[Part] = []
    for value, units, cost, events in drawing_order(price, usage.groups):
        take = min(left, units) if units > 0 else ZERO
        left -= take
        sub = price.prices.get(value, price.default) if value is not None else price.default
        name = f"{price.property} {value if value is not None else '(none)'}"
        for part in price_parts(sub, past_included(units, cost, events, (), take)):
            parts.append(Part(f"{name}, {part.label}" if part.label else name, part.quantity, part.unit_price,
                              part.amount))
    return parts
