"""Customers, subscriptions, seats and credit grants (the service layer over repositories)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from billing.catalog import Catalog
from billing.errors import BillingError, ErrorCode
from billing.ledger import repository
from billing.ledger.quota_types import storable_text
from billing.ledger.models import CreditGrantRow, Customer, SeatChange, Subscription
from billing.ledger.counters import to_micro
from billing.ledger.recount import customer_views, lock_for_recount, recount_customer
from billing.ledger.types import to_us


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None:
        raise BillingError(f"{name} must include a timezone", code=ErrorCode.VALIDATION)


def _not_invoiced(session: Session, sub: Subscription, at: datetime, what: str) -> None:
    """Finalized invoices never change: a change may not reach back into an invoiced period."""
    until = repository.invoiced_until(session, sub.id)
    if until is not None and until.replace(tzinfo=until.tzinfo or UTC) > at:
        raise BillingError(f"subscription {sub.id} is invoiced until {until.isoformat()}: cannot {what} at "
                           f"{at.isoformat()}; use an instant from then on", code=ErrorCode.PERIOD_INVOICED)


class Accounts:
    def __init__(self, engine: Engine, catalog: Catalog):
        self.engine = engine
        self.catalog = catalog

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ------------------------------------------------------------------ customers
    def create_customer(self, customer_id: str, *, name: str = "", timezone: str = "UTC",
                        currency: str = "USD", now: datetime) -> Customer:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise BillingError(f"unknown timezone {timezone!r}", code=ErrorCode.VALIDATION) from None
        if not customer_id or len(customer_id) > 200:
            raise BillingError("customer id must be 1-200 characters", code=ErrorCode.VALIDATION)
        storable_text("customer id", customer_id)
        storable_text("name", name)
        customer = Customer(id=customer_id, name=name, timezone=timezone, currency=currency.upper(), created_at=now)
        with self._session() as s:
            existing = s.get(Customer, customer_id)
            if existing is not None:
                if (existing.name, existing.timezone, existing.currency) == (name, timezone, currency.upper()):
                    return existing  # idempotent create
                raise BillingError(f"customer {customer_id!r} exists with other details", code=ErrorCode.CUSTOMER_EXISTS)
            s.add(customer)
            try:
                s.commit()
            except IntegrityError:
                raise BillingError(f"customer {customer_id!r} already exists", code=ErrorCode.CUSTOMER_EXISTS) from None
        return customer

    def customer(self, customer_id: str) -> Customer:
        with self._session() as s:
            row = s.get(Customer, customer_id)
        if row is None:
            raise BillingError(f"unknown customer {customer_id!r}", code=ErrorCode.CUSTOMER_NOT_FOUND)
        return row

    # -------------------------------------------------------------- subscriptions
    def subscribe(self, customer_id: str, plan_id: str, *, at: datetime, seats: int = 1,
                  version: int | None = None, previous_id: int | None = None) -> Subscription:
        """Start a subscription pinned to the plan version in force at ``at`` (or ``version``)."""
        _require_aware(at, "at")
        customer = self.customer(customer_id)
        plan = self.catalog.get(plan_id, version) if version else self.catalog.resolve(plan_id, at)
        if plan.currency != customer.currency:
            raise BillingError(f"plan {plan.ref} bills in {plan.currency}, customer {customer_id!r} in "
                               f"{customer.currency}", code=ErrorCode.CURRENCY_MISMATCH)
        with self._session() as s:
            conn = s.connection()
            lock_for_recount(conn)
            before = customer_views(conn, self.catalog, customer_id)
            overlapping = repository.subscriptions_not_ended_by(s, customer_id, at)
            if overlapping:  # one subscription at a time: events are never billed twice
                current = overlapping[0]
                raise BillingError(f"customer {customer_id!r} already has subscription {current.id} "
                                   f"({current.plan_id}) at {at.isoformat()} or later; change the plan instead",
                                   code=ErrorCode.SUBSCRIPTION_EXISTS)
            from datetime import timedelta
            sub = Subscription(customer_id=customer_id, plan_id=plan.plan, plan_version=plan.version,
                               started_at=at, anchor_at=at, previous_id=previous_id, created_at=at,
                               trial_end=at + timedelta(days=plan.trial_days) if plan.trial_days else None)
            s.add(sub)
            s.flush()
            s.add(SeatChange(subscription_id=sub.id, effective_at=at, seats=seats, created_at=at))
            s.flush()
            recount_customer(conn, self.catalog, customer_id, to_us(at), before)  # events it covers may be stored
            s.commit()
            s.refresh(sub)
        return sub

    def subscription(self, subscription_id: int) -> Subscription:
        with self._session() as s:
            sub = s.get(Subscription, subscription_id)
        if sub is None:
            raise BillingError(f"unknown subscription {subscription_id}", code=ErrorCode.SUBSCRIPTION_NOT_FOUND)
        return sub

    def current_subscription(self, customer_id: str, at: datetime) -> Subscription:
        with self._session() as s:
            sub = repository.active_subscription(s, customer_id, at)
        if sub is None:
            raise BillingError(f"customer {customer_id!r} has no active subscription at {at.isoformat()}",
                               code=ErrorCode.SUBSCRIPTION_NOT_FOUND)
        return sub

    def change_seats(self, customer_id: str, seats: int, *, at: datetime) -> SeatChange:
        """Seats from ``at`` on (prorated by the plan's seat fee rules)."""
        _require_aware(at, "at")
        if seats < 0:
            raise BillingError("seats must not be negative", code=ErrorCode.VALIDATION)
        sub = self.current_subscription(customer_id, at)
        change = SeatChange(subscription_id=sub.id, effective_at=at, seats=seats, created_at=at)
        with self._session() as s:
            _not_invoiced(s, sub, at, "change its seats")
            s.add(change)
            s.commit()
        return change

    def cancel(self, customer_id: str, *, at: datetime, status: str = "canceled") -> Subscription:
        _require_aware(at, "at")
        sub = self.current_subscription(customer_id, at)
        with self._session() as s:
            conn = s.connection()
            lock_for_recount(conn)
            before = customer_views(conn, self.catalog, customer_id)
            _not_invoiced(s, sub, at, "end it")
            row = s.get(Subscription, sub.id)
            row.ended_at = at
            row.status = status
            s.add(row)
            s.flush()
            recount_customer(conn, self.catalog, customer_id, to_us(at), before)  # events after `at` may be counted
            s.commit()
            s.refresh(row)
        return row

    def change_plan(self, customer_id: str, plan_id: str, *, at: datetime, version: int | None = None) -> Subscription:
        """End the current subscription at ``at`` (its part is billed on its own invoice) and
        start the new plan from ``at`` with the same seats."""
        old = self.current_subscription(customer_id, at)
        with self._session() as s:
            seats = repository.seat_history(s, old.id)
        held = [n for t, n in seats if t <= at]
        self.cancel(customer_id, at=at, status="replaced")
        return self.subscribe(customer_id, plan_id, at=at, seats=held[-1] if held else 1, version=version,
                              previous_id=old.id)

    # -------------------------------------------------------------------- credits
    def grant_credits(self, customer_id: str, amount: Decimal, *, at: datetime, expires_at: datetime | None = None,
                      name: str = "Prepaid credits", grant_id: str | None = None,
                      applies_to: tuple[str, ...] | None = None) -> CreditGrantRow:
        _require_aware(at, "at")
        customer = self.customer(customer_id)
        if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
            raise BillingError("a credit grant must be a positive amount", code=ErrorCode.VALIDATION)
        if expires_at is not None:
            _require_aware(expires_at, "expires_at")
            if expires_at <= at:
                raise BillingError("a credit grant must expire after it starts", code=ErrorCode.VALIDATION)
        grant = CreditGrantRow(id=grant_id or f"grant_{uuid.uuid4().hex[:16]}", customer_id=customer_id, name=name,
                               amount_micro=to_micro(amount), currency=customer.currency, effective_at=at,
                               expires_at=expires_at, applies_to=",".join(applies_to) if applies_to else None,
                               created_at=at)
        with self._session() as s:
            existing = s.get(CreditGrantRow, grant.id)
            if existing is not None:
                if existing.amount_micro == grant.amount_micro and existing.customer_id == customer_id:
                    return existing
                raise BillingError(f"grant {grant.id!r} exists with other details", code=ErrorCode.CONFLICT)
            s.add(grant)
            s.commit()
        return grant
