"""Queries for customers, subscriptions and invoices (grants and seat histories:
``store.grants_and_seats``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, or_
from sqlmodel import Session, select

from billing.store.models import Customer, Invoice, InvoiceLineRow, Subscription


def known_customers(session: Session, ids: Iterable[str]) -> dict[str, str]:
    """customer id -> timezone, for the ids that exist."""
    ids = list(set(ids))
    out: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        rows = session.exec(select(Customer.id, Customer.timezone).where(Customer.id.in_(ids[i:i + 500])))
        out.update({cid: tz for cid, tz in rows})
    return out


def list_customers(session: Session, limit: int = 1000, offset: int = 0) -> Sequence[Customer]:
    return session.exec(select(Customer).order_by(Customer.id).offset(offset).limit(limit)).all()


def active_subscription(session: Session, customer_id: str, at: datetime) -> Subscription | None:
    return session.exec(
        select(Subscription).where(Subscription.customer_id == customer_id, Subscription.started_at <= at,
                                   or_(Subscription.ended_at.is_(None), Subscription.ended_at > at))
        .order_by(Subscription.started_at.desc())).first()


def subscriptions_not_ended_by(session: Session, customer_id: str, at: datetime) -> Sequence[Subscription]:
    """The customer's subscriptions that cover ``at`` or start later."""
    return session.exec(
        select(Subscription).where(Subscription.customer_id == customer_id,
                                   or_(Subscription.ended_at.is_(None), Subscription.ended_at > at))
        .order_by(Subscription.started_at)).all()


def invoiced_until(session: Session, subscription_id: int) -> datetime | None:
    """The end of the last period of the subscription that was closed (its ``inv:`` invoice:
    an opening invoice of advance fees or a threshold invoice closes no period)."""
    return session.exec(select(func.max(Invoice.period_end)).where(Invoice.subscription_id == subscription_id,
                                                                   Invoice.kind == "invoice",
                                                                   Invoice.dedupe_key.startswith("inv:"))).one()


def advance_billed_from(session: Session, subscription_id: int) -> datetime | None:
    """The start of the latest window of the subscription whose advance fees were invoiced
    (the seats held then are billed: no change may take effect at or before it)."""
    return session.exec(select(func.max(InvoiceLineRow.service_start))
                         .join(Invoice, Invoice.id == InvoiceLineRow.invoice_id)
                         .where(Invoice.subscription_id == subscription_id, InvoiceLineRow.billed_in_advance)).one()




def subscription_rows(session: Session, customer_ids: Iterable[str]) -> list[tuple]:
    """(id, customer_id, plan_id, plan_version, anchor_at, started_at, ended_at) per subscription."""
    ids = list(set(customer_ids))
    out: list[tuple] = []
    cols = (Subscription.id, Subscription.customer_id, Subscription.plan_id, Subscription.plan_version,
            Subscription.anchor_at, Subscription.started_at, Subscription.ended_at)
    for i in range(0, len(ids), 500):
        out.extend(tuple(r) for r in session.exec(select(*cols).where(Subscription.customer_id.in_(ids[i:i + 500]))))
    return out
