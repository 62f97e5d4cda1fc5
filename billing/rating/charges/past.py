"""The units past the included ones, and their share of the provider cost and of the events:
THE rule (``arithmetic.billable`` and each value of a dimension price use it)."""

from decimal import Decimal

from billing.rating.types import Billable

ZERO = Decimal(0)


def past_included(units: Decimal, cost: Decimal, events: int, transactions: tuple[Decimal, ...],
                  included: Decimal) -> Billable:
    """The units past ``included``, their share of the cost and of the events (all of them
    when nothing is included)."""
    if units <= 0:  # no units: no cost share (a cost-plus price bills nothing)
        return Billable(ZERO, ZERO, events if included == 0 else 0, transactions)
    if not included:  # every unit is billable: no division
        return Billable(units, cost, events, transactions)
    past = units - included if units > included else ZERO
    share = past / units
    return Billable(past, cost * share, int(events * share), transactions)
