"""Queries for customers, subscriptions and counters (all SQL lives in ledger/; grants and
seat histories: ``ledger.grants_and_seats``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, or_
from sqlmodel import Session, select

from billing.store.models import Customer, Invoice, Subscription, UsageCounter


def known_customers(session: Session, ids: Iterable[str]) -> dict[str, str]:
    """customer id -> timezone, for the ids that exist."""
    ids = list(set(ids))
    out: dict[str, str] = {}
    for i in range(0, len(ids), 500):
        rows = session.exec(select(Customer.id, Customer.timezone).where(Customer.id.in_(ids[i:i + 500])))
        out.update({cid: tz for cid, tz in rows})
    return out


def get_customer(session: Session, customer_id: str) -> Customer | None:
    return session.get(Customer, customer_id)


def list_customers(session: Session, limit: int = 1000, offset: int = 0) -> Sequence[Customer]:
    return session.exec(select(Customer).order_by(Customer.id).offset(offset).limit(limit)).all()


def subscriptions_for(session: Session, customer_ids: Iterable[str]) -> list[Subscription]:
    ids = list(set(customer_ids))
    out: list[Subscription] = []
    for i in range(0, len(ids), 500):
        out.extend(session.exec(select(Subscription).where(Subscription.customer_id.in_(ids[i:i + 500]))
                                .order_by(Subscription.id)).all())
    return out


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
    """The end of the last period of the subscription that has an invoice."""
    return session.exec(select(func.max(Invoice.period_end)).where(Invoice.subscription_id == subscription_id,
                                                                   Invoice.kind == "invoice")).one()


def subscriptions_to_close(session: Session, as_of: datetime) -> Sequence[Subscription]:
    return session.exec(select(Subscription).where(Subscription.started_at < as_of).order_by(Subscription.id)).all()


def counters_for(session: Session, customer_id: str, period_start_us: int) -> dict[str, UsageCounter]:
    rows = session.exec(select(UsageCounter).where(UsageCounter.customer_id == customer_id,
                                                   UsageCounter.period_start == period_start_us)).all()
    return {r.meter: r for r in rows}


def all_counters(session: Session) -> Sequence[UsageCounter]:
    return session.exec(select(UsageCounter)).all()


def subscription_rows(session: Session, customer_ids: Iterable[str]) -> list[tuple]:
    """(id, customer_id, plan_id, plan_version, anchor_at, started_at, ended_at) per subscription."""
    ids = list(set(customer_ids))
    out: list[tuple] = []
    cols = (Subscription.id, Subscription.customer_id, Subscription.plan_id, Subscription.plan_version,
            Subscription.anchor_at, Subscription.started_at, Subscription.ended_at)
    for i in range(0, len(ids), 500):
        out.extend(tuple(r) for r in session.exec(select(*cols).where(Subscription.customer_id.in_(ids[i:i + 500]))))
    return out
