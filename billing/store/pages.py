"""Keyset pages of the ledger's lists (the HTTP API's ``GET /v1/<list>``): customers,
subscriptions, invoices and credit notes, events (credit grants: ``store.grants_and_seats``).

Every list is ordered by (created, id), ascending: ``created`` is the row's ``created_at``
(an event's ``ts``), ``id`` its primary key (an event's ledger row id), so the order is total
and stable while rows are added. A page is the ``limit`` rows after a key (or, walking back,
before one), read with one query that fetches one row more to know whether there are more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, or_, select
from sqlalchemy.sql import ColumnElement, Select

from billing.store.models import Customer, Invoice, Subscription, UsageEventRow
from billing.store.types import from_us, to_us

EVENT_STATUSES = ("unpriced", "unmetered")


@dataclass(frozen=True)
class Key:
    """A position in a list: the (created, id) of a row (created in microseconds, UTC)."""

    created_us: int
    id: int | str


@dataclass(frozen=True)
class Page:
    rows: list[Any]  # the rows, in list order
    keys: list[Key]  # each row's position
    has_more: bool  # rows beyond the page in the direction walked


@dataclass(frozen=True)
class Listed:
    """What a list pages over: its table's select, created and id columns."""

    query: Select
    created: Any
    id: Any
    created_is_us: bool = False  # created is already integer microseconds (events' ts)

    def bound(self, us: int) -> Any:
        return us if self.created_is_us else from_us(us)

    def key(self, row: Any) -> Key:
        created = getattr(row, self.created.key)
        return Key(created if self.created_is_us else to_us(created), getattr(row, self.id.key))


def page_of(conn: Connection, listed: Listed, filters: Sequence[ColumnElement], limit: int,
            after: Key | None, before: Key | None) -> Page:
    """The ``limit`` rows of ``listed`` matching ``filters`` after ``after`` (or before ``before``)."""
    query = listed.query.where(*filters)
    c, i = listed.created, listed.id
    if before is not None:
        at = listed.bound(before.created_us)
        query = query.where(c <= at, or_(c < at, i < before.id)).order_by(c.desc(), i.desc())
    else:
        if after is not None:
            at = listed.bound(after.created_us)
            query = query.where(c >= at, or_(c > at, i > after.id))  # the bound alone starts an index range
        query = query.order_by(c, i)
    rows = list(conn.execute(query.limit(limit + 1)).all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    if before is not None:
        rows.reverse()
    return Page(rows, [listed.key(r) for r in rows], has_more)


_CUSTOMER = Customer.__table__.c
_SUBSCRIPTION = Subscription.__table__.c
_INVOICE = Invoice.__table__.c
_EVENT = UsageEventRow.__table__.c


def customers_page(conn: Connection, *, limit: int, after: Key | None = None, before: Key | None = None,
                   customer: str | None = None) -> Page:
    """Customers (one only for a key restricted to ``customer``)."""
    listed = Listed(select(Customer.__table__), _CUSTOMER.created_at, _CUSTOMER.id)
    return page_of(conn, listed, [] if customer is None else [_CUSTOMER.id == customer], limit, after, before)


def subscriptions_page(conn: Connection, *, limit: int, after: Key | None = None, before: Key | None = None,
                       customer: str | None = None, status: str | None = None, plan: str | None = None) -> Page:
    """Subscriptions (their seats: ``store.grants_and_seats.seat_histories``)."""
    listed = Listed(select(Subscription.__table__), _SUBSCRIPTION.created_at, _SUBSCRIPTION.id)
    filters = []
    if customer is not None:
        filters.append(_SUBSCRIPTION.customer_id == customer)
    if status is not None:
        filters.append(_SUBSCRIPTION.status == status)
    if plan is not None:
        filters.append(_SUBSCRIPTION.plan_id == plan)
    return page_of(conn, listed, filters, limit, after, before)


def invoices_page(conn: Connection, *, kind: str, limit: int, after: Key | None = None, before: Key | None = None,
                  customer: str | None = None, status: str | None = None, subscription: int | None = None) -> Page:
    """Invoices (``kind`` ``invoice``) or credit notes (``credit_note``), without their lines."""
    listed = Listed(select(Invoice.__table__), _INVOICE.created_at, _INVOICE.id)
    filters = [_INVOICE.kind == kind]
    if customer is not None:
        filters.append(_INVOICE.customer_id == customer)
    if status is not None:
        filters.append(_INVOICE.status == status)
    if subscription is not None:
        filters.append(_INVOICE.subscription_id == subscription)
    return page_of(conn, listed, filters, limit, after, before)


def events_page(conn: Connection, *, limit: int, after: Key | None = None, before: Key | None = None,
                customer: str | None = None, type: str | None = None, status: str | None = None,
                start: datetime | None = None, end: datetime | None = None) -> Page:
    """Usage events by time (``ts``, then arrival), of ``customer``, of ``type``, with
    ``timestamp`` in ``[start, end)``, ``status`` ``unpriced`` / ``unmetered`` (kept though
    the cost book could not price them / no plan meters them)."""
    listed = Listed(select(UsageEventRow.__table__), _EVENT.ts, _EVENT.id, created_is_us=True)
    filters = []
    if customer is not None:
        filters.append(_EVENT.customer_id == customer)
    if type is not None:
        filters.append(_EVENT.type == type)
    if status == "unpriced":
        filters.append(_EVENT.unpriced.is_not(None))
    elif status == "unmetered":
        filters.append(_EVENT.unmetered.is_not(None))
    elif status is not None:
        raise ValueError(f"status must be one of {', '.join(EVENT_STATUSES)}")
    if start is not None:
        filters.append(_EVENT.ts >= to_us(start))
    if end is not None:
        filters.append(_EVENT.ts < to_us(end))
    return page_of(conn, listed, filters, limit, after, before)
