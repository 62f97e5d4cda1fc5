"""What a sync or a reconciliation reports, and the metadata keys that tie Stripe objects
to ours (shared by the invoice and credit note code)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import stripe

from billing.stripe_sync.client import describe

META_CUSTOMER = "billing_customer_id"
META_INVOICE = "billing_invoice_id"  # on Stripe invoices and credit notes: our document id
META_NUMBER = "billing_invoice_number"
META_LINE = "billing_line_id"
META_CORRECTS = "billing_corrects_invoice_id"  # on Stripe credit notes: the invoice they correct


def meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


class PushFailed(Exception):
    """A document cannot be pushed now; the message says why (no Stripe key in it)."""


@dataclass
class Outcome:
    invoice_id: int
    number: str | None
    action: str  # pushed | completed | already | skipped | failed | voided | would_push | would_void | unchanged
    stripe_invoice_id: str | None = None
    reason: str = ""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class SyncResult:
    dry_run: bool = False
    outcomes: list[Outcome] = field(default_factory=list)

    def by_action(self, action: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.action == action]

    @property
    def ok(self) -> bool:
        return not self.by_action("failed")

    def to_json(self) -> dict:
        counts: dict[str, int] = {}
        for o in self.outcomes:
            counts[o.action] = counts.get(o.action, 0) + 1
        return {"dry_run": self.dry_run, "ok": self.ok, "counts": counts,
                "invoices": [o.to_json() for o in self.outcomes]}


@dataclass
class Difference:
    # missing_in_stripe | extra_in_stripe | amount_mismatch | status_mismatch | line_count_mismatch
    # | line_mismatch
    kind: str
    invoice_id: int | None
    number: str | None
    stripe_invoice_id: str | None
    ours: Any = None
    stripe: Any = None
    message: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def attempt(doc: Any, work: Callable[[], Outcome], stripe_id: str | None = None) -> Outcome:
    """``work()``, or the document's ``failed`` outcome when Stripe refuses or the push stops
    (``PushFailed``): one document's failure never stops the others."""
    try:
        return work()
    except PushFailed as exc:
        return Outcome(doc.id, doc.number, "failed", stripe_id, reason=str(exc))
    except stripe.StripeError as exc:
        return Outcome(doc.id, doc.number, "failed", stripe_id, reason=describe(exc))
