"""A subscription's contract terms and what of them applies to one window (pure).

Rating (``billing.invoicing.windows``) and the quota context (``billing.reservations.sql``)
resolve a subscription's plan here, so the close, its late re-rating, reports, forecasts
and quota decisions all see the same contract:

* the effective plan: the overrides in force at the window's start
  (``catalog.overrides.effective_plan``);
* the discounts: each coupon redemption whose span ``[redeemed_at, ends_at)`` overlaps the
  window, in redemption order;
* the term commitments overlapping the window (each owes its pro-rata share);
* the add-on subscriptions active in the window (their plans' fees, on the base's invoice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from billing.catalog.overrides import Override, effective_plan
from billing.catalog.schema import Plan
from billing.rating.types import AddOn, Discount, TermCommitment


@dataclass(frozen=True)
class Redemption:
    """A coupon redeemed on the subscription (``discount``: what it takes off an invoice)."""

    discount: Discount
    redeemed_at: datetime
    ends_at: datetime | None  # None: forever

    def applies(self, start: datetime, end: datetime) -> bool:
        return end > self.redeemed_at and (self.ends_at is None or start < self.ends_at)


@dataclass(frozen=True)
class AddOnRef:
    """An add-on subscription as stored: its plan version and when it is active."""

    id: int
    plan_id: str
    plan_version: int
    started_at: datetime
    ended_at: datetime | None

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.started_at < end and (self.ended_at is None or start < self.ended_at)


@dataclass(frozen=True)
class ContractTerms:
    overrides: tuple[Override, ...] = ()
    redemptions: tuple[Redemption, ...] = ()  # in redemption order
    commitments: tuple[TermCommitment, ...] = ()
    addons: tuple[AddOnRef, ...] = ()  # in id order

    def addons_in(self, start: datetime, end: datetime, plans: Callable[[str, int], Plan]) -> tuple[AddOn, ...]:
        """The add-ons active in [start, end), with their plan's fees (``plans``: the catalog's get)."""
        out = []
        for ref in self.addons:
            if ref.overlaps(start, end):
                plan = plans(ref.plan_id, ref.plan_version)
                out.append(AddOn(f"addon:{ref.id}", plan.name, plan.fees, ref.started_at, ref.ended_at))
        return tuple(out)

    def plan_at(self, plan: Plan, window_start: datetime) -> Plan:
        """The plan a window starting at ``window_start`` is rated (and decided) on."""
        return effective_plan(plan, self.overrides, window_start) if self.overrides else plan

    def discounts(self, start: datetime, end: datetime) -> tuple[Discount, ...]:
        return tuple(r.discount for r in self.redemptions if r.applies(start, end))

    def commitments_in(self, start: datetime, end: datetime) -> tuple[TermCommitment, ...]:
        return tuple(c for c in self.commitments if c.starts_at < end and start < c.ends_at)


NO_TERMS = ContractTerms()


def coupon_discount(code: str, name: str, applies_to: str, percent: Decimal | None,
                    amount: Decimal | None, currency: str) -> Discount:
    """The invoice line a coupon gives: ``Coupon CODE: name (20% off usage)``."""
    what = f"{percent.normalize():f}% off" if percent is not None else f"{amount} {currency} off"
    scope = "usage" if applies_to == "usage" else "the invoice"
    label = f"Coupon {code}" + (f": {name}" if name else "")
    return Discount(f"coupon:{code}", f"{label} ({what} {scope})", applies_to, percent, amount)


@dataclass
class TermsBuilder:
    """Collects a subscription's rows into ``ContractTerms`` (the repository and the quota
    context read the same rows)."""

    overrides: list[Override] = field(default_factory=list)
    redemptions: list[tuple[tuple, Redemption]] = field(default_factory=list)
    commitments: list[TermCommitment] = field(default_factory=list)
    addons: list[AddOnRef] = field(default_factory=list)

    def build(self) -> ContractTerms:
        return ContractTerms(tuple(self.overrides), tuple(r for _, r in sorted(self.redemptions, key=lambda x: x[0])),
                             tuple(sorted(self.commitments, key=lambda c: (c.starts_at, c.id))),
                             tuple(sorted(self.addons, key=lambda a: a.id)))

