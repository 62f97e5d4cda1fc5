"""The few ledger reads and writes the Stripe sync needs. Every write is one conditional
UPDATE, so it is idempotent and safe against concurrent workers and replayed webhooks:
Stripe ids are set once (a second, different id is refused and reported). Status changes
(paid, payment failed, void) go through the one lifecycle, ``billing.invoicing.lifecycle``.
"""

from __future__ import annotations

from datetime import datetime

import sqlmodel
from sqlalchemy import Engine, or_, select, update
from sqlmodel import Session

from billing.invoicing.lifecycle import InvoiceStatus
from billing.store.models import Customer, Invoice, InvoiceLineRow

_inv = Invoice.__table__
_line = InvoiceLineRow.__table__
_cus = Customer.__table__


def _status(engine: Engine, invoice_id: int) -> Invoice | None:
    with Session(engine, expire_on_commit=False) as s:
        return s.get(Invoice, invoice_id)


def set_stripe_invoice_id(engine: Engine, invoice_id: int, stripe_id: str) -> bool:
    """True if the invoice now carries ``stripe_id`` (set now or before)."""
    with engine.begin() as conn:
        conn.execute(update(_inv).where(_inv.c.id == invoice_id, _inv.c.stripe_invoice_id.is_(None))
                     .values(stripe_invoice_id=stripe_id))
    inv = _status(engine, invoice_id)
    return inv is not None and inv.stripe_invoice_id == stripe_id


def set_stripe_line_id(engine: Engine, line_id: int, stripe_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(_line).where(_line.c.id == line_id,
                                         or_(_line.c.stripe_line_id.is_(None), _line.c.stripe_line_id != stripe_id))
                     .values(stripe_line_id=stripe_id))


def set_stripe_customer_id(engine: Engine, customer_id: str, stripe_id: str) -> str:
    """Store the mapping once; returns the id the customer carries afterwards."""
    with engine.begin() as conn:
        conn.execute(update(_cus).where(_cus.c.id == customer_id, _cus.c.stripe_customer_id.is_(None))
                     .values(stripe_customer_id=stripe_id))
    with Session(engine) as s:
        row = s.get(Customer, customer_id)
        return row.stripe_customer_id if row else stripe_id


def mapped_stripe_customers(engine: Engine) -> list[str]:
    """The Stripe customer id of every billing customer that has one."""
    with engine.connect() as conn:
        rows = conn.execute(select(_cus.c.stripe_customer_id).where(_cus.c.stripe_customer_id.is_not(None))
                            .order_by(_cus.c.id)).all()
    return list(dict.fromkeys(r[0] for r in rows))


def customer(engine: Engine, customer_id: str) -> Customer | None:
    with Session(engine, expire_on_commit=False) as s:
        return s.get(Customer, customer_id)


def invoice_with_lines(engine: Engine, invoice_id: int) -> tuple[Invoice | None, list[InvoiceLineRow]]:
    with Session(engine, expire_on_commit=False) as s:
        inv = s.get(Invoice, invoice_id)
        lines = list(s.exec(sqlmodel.select(InvoiceLineRow).where(InvoiceLineRow.invoice_id == invoice_id)
                            .order_by(InvoiceLineRow.position, InvoiceLineRow.id)).all())
    return inv, lines


def invoices_to_push(engine: Engine, only: list[int] | None = None) -> list[Invoice]:
    """Finalized or paid documents not fully pushed yet (``stripe_invoice_id`` is set only
    once the Stripe invoice is complete and finalized, or the credit note issued), in id
    order (an invoice before the credit notes that correct it)."""
    pushable = (InvoiceStatus.FINALIZED.value, InvoiceStatus.PAID.value)
    query = sqlmodel.select(Invoice).where(Invoice.status.in_(pushable), Invoice.stripe_invoice_id.is_(None))
    if only:
        query = query.where(Invoice.id.in_(only))
    with Session(engine, expire_on_commit=False) as s:
        return list(s.exec(query.order_by(Invoice.id)).all())


def void_documents_to_check(engine: Engine, only: list[int] | None = None) -> list[Invoice]:
    """Void documents that may still be live in Stripe: those with a Stripe id or a pushed
    line (a partial push) that Stripe was not yet seen to agree with; with ``only``, every
    void document among those ids."""
    pushed_line = select(_line.c.id).where(_line.c.invoice_id == _inv.c.id,
                                                   _line.c.stripe_line_id.is_not(None)).exists()
    query = sqlmodel.select(Invoice).where(Invoice.status == InvoiceStatus.VOID.value)
    if only:
        query = query.where(Invoice.id.in_(only))
    else:
        query = query.where(or_(Invoice.stripe_invoice_id.is_not(None), pushed_line),
                            Invoice.stripe_void_confirmed_at.is_(None))
    with Session(engine, expire_on_commit=False) as s:
        return list(s.exec(query.order_by(Invoice.id)).all())


def confirm_void(engine: Engine, invoice_id: int, at: datetime) -> None:
    """Stripe agrees with our void document: later syncs need not look at it again."""
    with engine.begin() as conn:
        conn.execute(update(_inv).where(_inv.c.id == invoice_id, _inv.c.status == InvoiceStatus.VOID.value,
                                        _inv.c.stripe_void_confirmed_at.is_(None))
                     .values(stripe_void_confirmed_at=at))


def all_invoices(engine: Engine) -> list[Invoice]:
    with Session(engine, expire_on_commit=False) as s:
        query = sqlmodel.select(Invoice).where(Invoice.status != InvoiceStatus.DRAFT.value)
        return list(s.exec(query.order_by(Invoice.id)).all())


def lines_by_invoice(engine: Engine) -> dict[int, list[InvoiceLineRow]]:
    """Every line of every document, by document id (reconcile compares them all)."""
    out: dict[int, list[InvoiceLineRow]] = {}
    with Session(engine, expire_on_commit=False) as s:
        for ln in s.exec(sqlmodel.select(InvoiceLineRow).order_by(InvoiceLineRow.invoice_id, InvoiceLineRow.position,
                                                                  InvoiceLineRow.id)).all():
            out.setdefault(ln.invoice_id, []).append(ln)
    return out


def find_by_stripe_id(engine: Engine, stripe_id: str) -> Invoice | None:
    with Session(engine, expire_on_commit=False) as s:
        return s.exec(sqlmodel.select(Invoice).where(Invoice.stripe_invoice_id == stripe_id)).first()


def get_invoice(engine: Engine, invoice_id: int) -> Invoice | None:
    return _status(engine, invoice_id)


def record_payment_mismatch(engine: Engine, inv: Invoice, details: dict, at: datetime) -> bool:
    """Queue an ``invoice.payment_mismatch`` event in the webhook outbox (at most once per
    invoice and received amount and currency): the operator's record of a payment Stripe
    reported for an amount or currency that is not the invoice's. True if queued now."""
    from billing.alerts.events import enqueue_event

    key = f"{inv.id}:{details.get('received_total')}:{details.get('received_currency')}"
    with engine.begin() as conn:
        return enqueue_event(conn, "invoice.payment_mismatch", key, inv.customer_id, details, at)
