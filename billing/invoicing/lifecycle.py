"""The one invoice lifecycle: which document may move from which status by which action,
and the one function that moves it.

Invoices: draft -> finalized -> paid / void / uncollectible; an uncollectible invoice may
still be paid or voided. Credit notes: draft -> finalized -> void (a credit note is never
paid, past due or uncollectible). A payment failure is recorded once on a finalized invoice
(the first failure starts the dunning clock); reported after the invoice is settled (paid,
void, uncollectible) it is stale news and changes nothing.

``apply`` moves a document with one conditional UPDATE (``WHERE id = :id AND status =
:expected``): of two concurrent transitions exactly one wins; the other re-reads and
answers ``invalid_transition`` with the status it found, or succeeds without a change when
the document already is where the same action leads (TigerBeetle style: exists = success).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Engine, select, update
from sqlmodel import Session

from billing.alerts.lifecycle import document_moved
from billing.errors import BillingError, ErrorCode
from billing.store.models import Invoice
from billing.store.retry import Retry


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    FINALIZED = "finalized"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


class DocumentKind(StrEnum):
    INVOICE = "invoice"  # a period's invoice, or an ended subscription's adjustment invoice
    CREDIT_NOTE = "credit_note"


class Action(StrEnum):
    FINALIZE = "finalize"
    PAY = "pay"
    VOID = "void"
    MARK_UNCOLLECTIBLE = "mark_uncollectible"
    PAYMENT_FAILED = "payment_failed"


S, K, A = InvoiceStatus, DocumentKind, Action
# (kind, from status, action) -> to status; every pair not listed is an invalid transition
TRANSITIONS: dict[tuple[DocumentKind, InvoiceStatus, Action], InvoiceStatus] = {
    (K.INVOICE, S.DRAFT, A.FINALIZE): S.FINALIZED,
    (K.INVOICE, S.DRAFT, A.VOID): S.VOID,
    (K.INVOICE, S.FINALIZED, A.PAY): S.PAID,
    (K.INVOICE, S.FINALIZED, A.VOID): S.VOID,
    (K.INVOICE, S.FINALIZED, A.MARK_UNCOLLECTIBLE): S.UNCOLLECTIBLE,
    (K.INVOICE, S.FINALIZED, A.PAYMENT_FAILED): S.FINALIZED,
    (K.INVOICE, S.UNCOLLECTIBLE, A.PAY): S.PAID,
    (K.INVOICE, S.UNCOLLECTIBLE, A.VOID): S.VOID,
    (K.CREDIT_NOTE, S.DRAFT, A.FINALIZE): S.FINALIZED,
    (K.CREDIT_NOTE, S.DRAFT, A.VOID): S.VOID,
    (K.CREDIT_NOTE, S.FINALIZED, A.VOID): S.VOID,
}
# (kind, status, action) that succeed without a change: a payment failure reported after
# the invoice was settled
STALE: frozenset[tuple[DocumentKind, InvoiceStatus, Action]] = frozenset(
    (K.INVOICE, status, A.PAYMENT_FAILED) for status in (S.PAID, S.VOID, S.UNCOLLECTIBLE))
# the instant each action records, set once (None: the action records no instant)
STAMPS: dict[Action, str | None] = {
    A.FINALIZE: "finalized_at", A.PAY: "paid_at", A.VOID: "voided_at", A.MARK_UNCOLLECTIBLE: None,
    A.PAYMENT_FAILED: "payment_failed_at"}
# documents whose lines stay billed whatever their payment status (all but drafts)
BILLED_STATUSES: tuple[str, ...] = tuple(s.value for s in InvoiceStatus if s is not S.DRAFT)
del S, K, A


def next_status(kind: DocumentKind | str, status: InvoiceStatus | str, action: Action) -> InvoiceStatus | None:
    """Where ``action`` takes a ``kind`` document in ``status``; None: not allowed."""
    return TRANSITIONS.get((DocumentKind(kind), InvoiceStatus(status), action))


def already_done(kind: DocumentKind | str, status: InvoiceStatus | str, action: Action,
                 stamped: bool) -> bool:
    """True if ``action`` has nothing left to do on a ``kind`` document in ``status``: the
    document is where the action leads (for an action that keeps the status, such as a
    payment failure, once its instant is recorded: ``stamped``), or the action is stale news."""
    kind, status = DocumentKind(kind), InvoiceStatus(status)
    if (kind, status, action) in STALE:
        return True
    if TRANSITIONS.get((kind, status, action)) == status:
        return stamped
    return any(k == kind and a == action and to == status for (k, _, a), to in TRANSITIONS.items())


@dataclass(frozen=True)
class Transition:
    invoice: Invoice  # the document after the call
    changed: bool  # False: already done (an idempotent repeat, or stale news)


def invalid_transition(document: str, kind: str, status: str, action: Action) -> BillingError:
    name = "credit note" if kind == DocumentKind.CREDIT_NOTE else "invoice"
    return BillingError(f"{name} {document} is {status}; cannot {action.value.replace('_', ' ')}",
                        code=ErrorCode.INVALID_TRANSITION,
                        details={"kind": str(kind), "status": str(status), "action": action.value})


def apply(engine: Engine, invoice_id: int, action: Action, at: datetime) -> Transition:
    """Move the document ``invoice_id`` by ``action`` at ``at`` (see the module docstring).
    Raises ``invoice_not_found`` or ``invalid_transition``."""
    retry = Retry()
    for _ in range(len(InvoiceStatus)):  # statuses only move forward: a lost race re-reads at most this often
        for attempt in retry.attempts():
            try:
                outcome = _attempt(engine, invoice_id, action, at)
                break
            except BillingError:
                raise
            except Exception as exc:
                if not retry.retryable(exc, attempt):
                    raise
        if outcome is not None:
            return Transition(_read(engine, invoice_id), outcome)
    raise BillingError(f"invoice {invoice_id} kept changing; try again", code=ErrorCode.CONFLICT)


def _attempt(engine: Engine, invoice_id: int, action: Action, at: datetime) -> bool | None:
    """One read and conditional UPDATE: True changed, False already done, None lost a race."""
    table = Invoice.__table__
    stamp = STAMPS[action]
    with engine.begin() as conn:
        row = conn.execute(select(table).where(table.c.id == invoice_id)).first()
        if row is None:
            raise BillingError(f"unknown invoice {invoice_id}", code=ErrorCode.INVOICE_NOT_FOUND)
        if already_done(row.kind, row.status, action, stamp is not None and getattr(row, stamp) is not None):
            return False
        target = next_status(row.kind, row.status, action)
        if target is None:
            raise invalid_transition(row.number or str(invoice_id), row.kind, row.status, action)
        condition = [table.c.id == invoice_id, table.c.status == row.status]
        values: dict[str, object] = {"status": target.value}
        if stamp is not None:
            condition.append(table.c[stamp].is_(None))
            values[stamp] = at
        if conn.execute(update(table).where(*condition).values(**values)).rowcount != 1:
            return None
        document_moved(conn, row, target.value, at)  # its webhook, in the same transaction
        return True


def _read(engine: Engine, invoice_id: int) -> Invoice:
    with Session(engine, expire_on_commit=False) as s:
        inv = s.get(Invoice, invoice_id)
    if inv is None:
        raise BillingError(f"unknown invoice {invoice_id}", code=ErrorCode.INVOICE_NOT_FOUND)
    return inv
