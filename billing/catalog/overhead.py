"""A plan's fixed monthly overhead (``overhead``): what the vendor pays per seat or per user
beyond the model providers (hosting, support), in the plan's currency per month.

* ``per_seat``: for each seat held, prorated over the seats' time in the month (the seat
  history's segments, ``rating.periods.seat_segments``, by ``prorate_fraction``);
* ``per_user``: for each distinct value of the events' ``user`` property in the month.

Margin reports show it apart from the provider cost (``billing.reports.costs_beyond``).
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import model_validator

from billing.catalog.base import Frozen, Money


class Overhead(Frozen):
    per_seat: Money = Decimal(0)
    per_user: Money = Decimal(0)

    @model_validator(mode="after")
    def _some(self) -> "Overhead":
        if not self.per_seat and not self.per_user:
            raise ValueError("set per_seat or per_user (an amount per month)")
        return self
