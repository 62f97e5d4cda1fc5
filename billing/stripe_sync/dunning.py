"""Dunning: is a customer's payment overdue long enough for quota decisions to deny?

Pure (no database, no clock): the caller passes the customer's invoices, the plan and now.
An invoice counts when it is an ``invoice`` (not a credit note), still ``finalized``
(not paid, not void) and its payment failed at least ``plan.dunning.deny_after_days`` ago.
The quota layer denies with ``payment_overdue`` when this returns True.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Protocol


class _InvoiceLike(Protocol):
    kind: str
    status: str
    payment_failed_at: datetime | None


def deny_after_days(plan: Any) -> int:
    """``plan.dunning.deny_after_days`` (a catalog Plan), or a Dunning spec, or an int."""
    if isinstance(plan, int):
        return plan
    dunning = getattr(plan, "dunning", plan)
    return int(getattr(dunning, "deny_after_days"))


def overdue_since(invoices: Iterable[_InvoiceLike]) -> datetime | None:
    """The earliest payment failure among unpaid invoices, or None."""
    failed = [inv.payment_failed_at for inv in invoices
              if getattr(inv, "kind", "invoice") == "invoice" and inv.status == "finalized"
              and inv.payment_failed_at is not None]
    return min(failed) if failed else None


def is_payment_overdue(invoices: Iterable[_InvoiceLike], plan: Any, now: datetime) -> bool:
    if now.tzinfo is None:
        raise ValueError("now must include a timezone")
    since = overdue_since(invoices)
    if since is None:
        return False
    return now - since >= timedelta(days=deny_after_days(plan))
