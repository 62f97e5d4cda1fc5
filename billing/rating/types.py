"""Value types of the pure rating core (no database, HTTP or clock)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

ZERO = Decimal(0)

# per-value totals of a meter a dimension price splits: (value as text, or None when the
# event has no value; units, cost, events), in no particular order
Groups = tuple[tuple[str | None, Decimal, Decimal, int], ...]


@dataclass(frozen=True)
class MeterTotals:
    """A meter's aggregate over one period. ``transactions`` (per-event values, in time
    order) is only needed by percentage prices with per-transaction rules; ``groups`` (the
    totals per value of a property) only by dimension prices."""

    units: Decimal = ZERO
    events: int = 0
    cost: Decimal = ZERO
    transactions: tuple[Decimal, ...] = ()
    groups: Groups = ()

    def __add__(self, other: "MeterTotals") -> "MeterTotals":
        return MeterTotals(self.units + other.units, self.events + other.events,
                           self.cost + other.cost, self.transactions + other.transactions,
                           merge_groups(self.groups, other.groups))


def merge_groups(a: Groups, b: Groups) -> Groups:
    """Per-value totals of both, added value by value."""
    if not b:
        return a
    if not a:
        return b
    out: dict[str | None, list] = {}
    for value, units, cost, events in (*a, *b):
        slot = out.setdefault(value, [ZERO, ZERO, 0])
        slot[0] += units
        slot[1] += cost
        slot[2] += events
    return tuple((v, u, c, e) for v, (u, c, e) in out.items())


@dataclass(frozen=True)
class Billable:
    """What a charge model prices: the units past the included ones and their cost share
    (a capacity price: the period peaks of its meters, in the price's order)."""

    units: Decimal
    cost: Decimal = ZERO
    events: int = 0
    transactions: tuple[Decimal, ...] = ()
    peaks: tuple[Decimal, ...] = ()
    # a dimension price: the usage per value before the included units, and those units
    # (it draws them from the values in its own order); empty otherwise
    groups: Groups = ()
    included: Decimal = ZERO


@dataclass(frozen=True)
class Part:
    """One priced piece a charge model returns; the engine turns each into an invoice line."""

    label: str
    quantity: Decimal
    unit_price: Decimal | None
    amount: Decimal  # unrounded


@dataclass(frozen=True)
class CreditGrant:
    """Prepaid credit available to this invoice (``amount`` is what remains of it)."""

    id: str
    amount: Decimal
    name: str = "Prepaid credits"
    expires_at: datetime | None = None
    effective_at: datetime | None = None
    applies_to: tuple[str, ...] | None = None  # charge keys; None = every usage charge


@dataclass(frozen=True)
class Discount:
    """A coupon redeemed on the subscription, applying to this invoice: ``percent`` off
    (0-100) or ``amount`` off (in the invoice's currency), on the usage lines or on every
    line (``applies_to``). See ``arithmetic.discounts``."""

    id: str  # the line's key, e.g. "coupon:LAUNCH20"
    name: str
    applies_to: str = "all"  # "usage" | "all"
    percent: Decimal | None = None
    amount: Decimal | None = None


@dataclass(frozen=True)
class AddOn:
    """An add-on subscription rated into its base subscription's invoice: the recurring fees
    of its plan (a fees-only plan), billed over [active_from, active_until) within the
    base's window, with the base's seats; each line keyed ``<id>:<fee key>``."""

    id: str  # e.g. "addon:4"
    name: str  # the add-on plan's name, prefixed to each fee line
    fees: tuple  # the add-on plan's fees (``catalog.schema.Fee``)
    active_from: datetime
    active_until: datetime | None = None


@dataclass(frozen=True)
class TermCommitment:
    """A commitment of ``amount`` over a contract term [starts_at, ends_at), spread pro rata
    over the term's time: each window's minimum is its share (``arithmetic.term_minimum``)."""

    id: str  # the line's key, e.g. "commitment:3"
    name: str
    amount: Decimal
    starts_at: datetime
    ends_at: datetime
    applies_to: str = "all"  # "usage" | "all"


class LineKind(StrEnum):
    """What an invoice line is (stored and sent as its value)."""

    FEE = "fee"  # a recurring fee (flat or per seat)
    USAGE = "usage"  # a usage charge
    CAP = "cap"  # a spend cap's (negative) line
    CREDIT = "credit"  # prepaid credit drawn
    COMMITMENT = "commitment"  # a minimum commitment's (or a term commitment's) true-up
    DISCOUNT = "discount"  # a coupon's (negative) line
    ADJUSTMENT = "adjustment"  # a late correction of a closed period


@dataclass(frozen=True)
class InvoiceLine:
    kind: LineKind
    description: str
    quantity: Decimal
    unit_price: Decimal | None
    amount: Decimal  # rounded once, to the currency's minor unit
    key: str = ""  # fee / charge / grant key this line belongs to
    meter: str | None = None
    # an advance fee's line for the period ahead (a flat fee, or the seats held at the
    # window's start): what a plan with ``billing.advance_fees: at_period_start`` invoices
    # when the period starts; every other line is billed in arrears
    advance: bool = False


@dataclass(frozen=True)
class ChargeUsage:
    """Per-charge usage summary (for reports and quota state)."""

    charge: str
    meter: str
    units: Decimal
    included: Decimal
    billable: Decimal
    cost: Decimal
    amount: Decimal


@dataclass(frozen=True)
class RatedInvoice:
    customer: str
    currency: str
    period_start: datetime
    period_end: datetime
    plan: str
    plan_version: int
    lines: tuple[InvoiceLine, ...]
    total: Decimal
    provider_cost: Decimal
    credits_used: dict[str, Decimal] = field(default_factory=dict)
    usage: tuple[ChargeUsage, ...] = ()

    def to_json(self) -> dict:
        from billing.money import dec_str

        return {
            "customer": self.customer,
            "currency": self.currency,
            "period": {"start": self.period_start.isoformat().replace("+00:00", "Z"),
                       "end": self.period_end.isoformat().replace("+00:00", "Z")},
            "plan": {"id": self.plan, "version": self.plan_version},
            "lines": [{"description": ln.description, "kind": str(ln.kind), "key": ln.key,
                       "quantity": dec_str(ln.quantity),
                       "unit_price": None if ln.unit_price is None else dec_str(ln.unit_price),
                       "amount": str(ln.amount)} for ln in self.lines],
            "total": str(self.total),
            "provider_cost": dec_str(self.provider_cost),
            "credits_used": {k: str(v) for k, v in self.credits_used.items()},
        }
