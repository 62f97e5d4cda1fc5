"""Threshold invoicing's arithmetic (pure): what a window accrued since its last invoice.

A plan's ``invoice_when_due_reaches`` cuts an invoice whenever the usage amount accrued
since the period's last invoice reaches it. The usage amount is a rated invoice's usage,
cap and credit lines (fees and the commitment true-up are billed by the period's closing
invoice); *accrued* is, per line key, the window rated to an instant less what the
period's threshold invoices billed for that key. The ledger (``invoicing.thresholds``) and
``invoice preview`` (``billing.preview_schedule``) both cut with these functions, and the
closing invoice takes back, per key, what the threshold invoices billed
(``taken_back``): the period's invoices add up to its one invoice, to the cent.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from billing.money import minor_units
from billing.rating.types import InvoiceLine, LineKind, RatedInvoice

# the lines a threshold invoice bills: the usage amount, net of caps and credits
ACCRUING = frozenset({LineKind.USAGE, LineKind.CAP, LineKind.CREDIT})


def to_minor(amount: Decimal, currency: str) -> int:
    """A line amount (rounded once by the engine) as minor units."""
    return int(amount.scaleb(minor_units(currency)))


@dataclass
class Billed:
    """What a window's threshold invoices billed: minor units, line kind and name per key."""

    amounts: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    invoices: int = 0  # how many threshold invoices

    @property
    def total(self) -> int:
        return sum(self.amounts.values())

    def add(self, diffs: Mapping[str, int], kinds: Mapping[str, str], names: Mapping[str, str]) -> None:
        """Count one more threshold invoice billing ``diffs``."""
        for key, amount in diffs.items():
            self.amounts[key] = self.amounts.get(key, 0) + amount
            self.kinds.setdefault(key, kinds[key])
            self.names.setdefault(key, names[key])
        self.invoices += 1


def accrued(rated: RatedInvoice, billed: Billed) -> tuple[dict[str, int], dict[str, str], dict[str, str]]:
    """Per key, the accruing lines rated so far less what threshold invoices billed
    (nonzero differences in minor units, in key order), with each key's line kind and name."""
    fresh: dict[str, int] = defaultdict(int)
    kinds: dict[str, str] = dict(billed.kinds)
    names: dict[str, str] = dict(billed.names)
    for ln in rated.lines:
        if ln.kind in ACCRUING:
            fresh[ln.key] += to_minor(ln.amount, rated.currency)
            kinds.setdefault(ln.key, str(ln.kind))
            names.setdefault(ln.key, ln.description)
    diffs = {k: fresh.get(k, 0) - billed.amounts.get(k, 0) for k in set(fresh) | set(billed.amounts)}
    return {k: v for k, v in sorted(diffs.items()) if v}, kinds, names


def reaches(diffs: Mapping[str, int], threshold: Decimal, currency: str) -> bool:
    """Whether the accrued amount reaches the threshold (a threshold invoice is due)."""
    return bool(diffs) and sum(diffs.values()) >= to_minor(threshold, currency)


def taken_back(billed: Billed, currency: str) -> list[InvoiceLine]:
    """The closing invoice's lines giving back, per key, what threshold invoices billed."""
    q = Decimal(1).scaleb(-minor_units(currency))
    return [InvoiceLine(LineKind(billed.kinds[k]), f"{billed.names[k]}: invoiced on threshold invoices",
                        Decimal(1), None, Decimal(-v) * q, k)
            for k, v in sorted(billed.amounts.items()) if v]
