"""Customers, subscriptions, seats and credit grants (the service layer over repositories)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from billing.invoicing.lifecycle import InvoiceStatus
from billing.alerts.lifecycle import subscription_changed
from billing.catalog import Catalog
from billing.errors import BillingError, ErrorCode
from billing.events import instant_problem
from billing.store import repository
from billing.reservations.types import storable_text
from billing.store.models import CreditGrantRow, Customer, SeatChange, Subscription
from billing.ledger.counters import to_micro
from billing.store.grants_and_seats import seat_histories
from billing.ledger.recount import customer_views, lock_for_recount, recount_customer
from billing.store.types import to_us
from billing.money import CURRENCIES


# ------------------------------------------------------------------ validation
# One set of rules for every door (the API's routes and the CLI's commands both call the
# services below, which check; the API's request models reuse the constants).

MAX_ID_LENGTH = 200  # customer ids (customer.id)
MAX_SEATS = 1_000_000
MAX_ROW_ID = 2**31 - 1  # invoice and subscription ids: 32-bit INTEGER columns
MAX_CREDIT = Decimal(10**12)  # a grant, in its currency (micro-units fit a 64-bit column)
INVOICE_STATUSES = tuple(s.value for s in InvoiceStatus)  # what invoice lists filter on


def check_customer_id(customer_id: object) -> str:
    if not isinstance(customer_id, str) or not 0 < len(customer_id) <= MAX_ID_LENGTH:
        raise BillingError(f"customer id must be 1-{MAX_ID_LENGTH} characters", code=ErrorCode.VALIDATION)
    storable_text("customer id", customer_id)
    return customer_id


def check_text(name: str, value: object, max_length: int) -> str:
    """Text both databases store as given, in a column of ``max_length`` characters."""
    storable_text(name, value)
    if value is not None and len(value) > max_length:
        raise BillingError(f"{name} must be at most {max_length} characters", code=ErrorCode.VALIDATION)
    return value


def check_currency(currency: object) -> str:
    """The ISO 4217 code, upper case (``usd`` -> ``USD``); ``DOLLARS`` or ``XYZ`` is an error."""
    code = currency.strip().upper() if isinstance(currency, str) else None
    if code not in CURRENCIES:
        raise BillingError(f"currency must be an ISO 4217 code such as USD or EUR, got {currency!r}",
                           code=ErrorCode.VALIDATION)
    return code


def check_seats(seats: object) -> int:
    if isinstance(seats, bool) or not isinstance(seats, int) or not 0 <= seats <= MAX_SEATS:
        raise BillingError(f"seats must be a whole number from 0 to {MAX_SEATS:,}, got {seats!r}",
                           code=ErrorCode.VALIDATION)
    return seats


def check_row_id(value: object, what: str = "id") -> int:
    """An integer id that a 32-bit INTEGER column can hold (1 .. 2^31 - 1)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ROW_ID:
        raise BillingError(f"{what} must be a whole number from 1 to {MAX_ROW_ID:,}, got {value!r}",
                           code=ErrorCode.VALIDATION)
    return value


def check_invoice_status(status: object) -> str:
    if status not in INVOICE_STATUSES:
        raise BillingError(f"status must be one of {', '.join(INVOICE_STATUSES)}, got {status!r}",
                           code=ErrorCode.VALIDATION)
    return status


def check_instant(value: object, name: str) -> datetime:
    """An aware instant inside the window the engine takes (``billing.events.instant_problem``)."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise BillingError(f"{name} must include a timezone", code=ErrorCode.VALIDATION)
    problem = instant_problem(value)
    if problem:
        raise BillingError(f"{name} {problem}, got {value.isoformat()}", code=ErrorCode.VALIDATION)
    return value


def _not_invoiced(session: Session, sub: Subscription, at: datetime, what: str) -> None:
    """Finalized invoices never change: a change may not reach back into an invoiced period."""
    until = repository.invoiced_until(session, sub.id)
    if until is not None and until.replace(tzinfo=until.tzinfo or UTC) > at:
        raise BillingError(f"subscription {sub.id} is invoiced until {until.isoformat()}: cannot {what} at "
                           f"{at.isoformat()}; use an instant from then on", code=ErrorCode.PERIOD_INVOICED)
    ahead = repository.advance_billed_from(session, sub.id)
    if ahead is not None and ahead.replace(tzinfo=ahead.tzinfo or UTC) >= at:
        raise BillingError(f"subscription {sub.id} has its advance fees invoiced for the window starting "
                           f"{ahead.isoformat()}: cannot {what} at {at.isoformat()}; use a later instant",
                           code=ErrorCode.PERIOD_INVOICED)


class Accounts:
    def __init__(self, engine: Engine, catalog: Catalog):
        self.engine = engine
        self.catalog = catalog

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ------------------------------------------------------------------ customers
    def create_customer(self, customer_id: str, *, name: str = "", timezone: str = "UTC",
                        currency: str = "USD", now: datetime) -> Customer:
        check_customer_id(customer_id)
        check_text("name", name, 300)
        check_text("timezone", timezone, 64)
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise BillingError(f"unknown timezone {timezone!r}", code=ErrorCode.VALIDATION) from None
        currency = check_currency(currency)
        customer = Customer(id=customer_id, name=name, timezone=timezone, currency=currency, created_at=now)
        with self._session() as s:
            existing = s.get(Customer, customer_id)
            if existing is not None:
                if (existing.name, existing.timezone, existing.currency) == (name, timezone, currency):
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

    def set_threshold(self, customer_id: str, amount: Decimal | None) -> Customer:
        """The customer's own ``invoice_when_due_reaches``, overriding its plans' (None: the
        plans' again). At least the customer's currency's minor unit, at most 10^12."""
        from billing.money import threshold_problem

        customer = self.customer(customer_id)
        if amount is not None:
            if not isinstance(amount, Decimal) or not amount.is_finite() or not 0 < amount <= MAX_CREDIT:
                raise BillingError(f"a threshold must be a positive amount of at most {MAX_CREDIT:,}",
                                   code=ErrorCode.VALIDATION)
            problem = threshold_problem(amount, customer.currency)
            if problem:
                raise BillingError(f"invoice_when_due_reaches {problem}, got {amount}", code=ErrorCode.VALIDATION)
        with self._session() as s:
            row = s.get(Customer, customer_id)
            row.invoice_when_due_reaches = None if amount is None else str(amount)
            s.add(row)
            s.commit()
            s.refresh(row)
        return row

    def set_cost_guard(self, customer_id: str, guard: dict | None) -> Customer:
        """The customer's own cost guardrails (``cost_guard`` as a plan writes it), replacing
        its plan's for its quota decisions; None: back to the plan's. Every problem of a bad
        guard is named (``billing.quota.guards.parse_cost_guard``). A quota service caching
        contexts (``context_ttl``) sees the change within that time."""
        from billing.quota.guards import parse_cost_guard

        stored = None if guard is None else parse_cost_guard(guard).model_dump_json(exclude_none=True)
        with self._session() as s:
            row = s.get(Customer, customer_id)
            if row is None:
                raise BillingError(f"unknown customer {customer_id!r}", code=ErrorCode.CUSTOMER_NOT_FOUND)
            row.cost_guard = stored
            s.add(row)
            s.commit()
            s.refresh(row)
        return row

    # -------------------------------------------------------------- subscriptions
    def subscribe(self, customer_id: str, plan_id: str, *, at: datetime, seats: int = 1,
                  version: int | None = None, previous_id: int | None = None) -> Subscription:
        """Start a subscription pinned to the plan version in force at ``at`` (or ``version``)."""
        check_instant(at, "at")
        check_seats(seats)
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
            if previous_id is None:  # its webhook, in the same transaction (a plan change: updated)
                subscription_changed(conn, "subscription.created", str(sub.id), sub, at, seats=seats)
            else:
                subscription_changed(conn, "subscription.updated", f"{sub.id}:plan", sub, at, seats=seats,
                                     change="plan")
            s.commit()
            s.refresh(sub)
        return sub

    def subscription(self, subscription_id: int) -> Subscription:
        check_row_id(subscription_id, "subscription id")
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
        check_instant(at, "at")
        check_seats(seats)
        sub = self.current_subscription(customer_id, at)
        change = SeatChange(subscription_id=sub.id, effective_at=at, seats=seats, created_at=at)
        with self._session() as s:
            _not_invoiced(s, sub, at, "change its seats")
            s.add(change)
            s.flush()
            subscription_changed(s.connection(), "subscription.updated", f"{sub.id}:seats:{change.id}", sub, at,
                                 seats=seats, change="seats")
            s.commit()
        return change

    def cancel(self, customer_id: str, *, at: datetime, status: str = "canceled") -> Subscription:
        check_instant(at, "at")
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
            if status == "canceled":  # (a plan change's "replaced": the new one's subscription.updated)
                subscription_changed(conn, "subscription.canceled", str(row.id), row, at)
            s.commit()
            s.refresh(row)
        return row

    def change_plan(self, customer_id: str, plan_id: str, *, at: datetime, version: int | None = None) -> Subscription:
        """End the current subscription at ``at`` (its part is billed on its own invoice) and
        start the new plan from ``at`` with the same seats."""
        old = self.current_subscription(customer_id, at)
        with self._session() as s:
            seats = seat_histories(s.connection(), [old.id]).get(old.id, [])
        held = [n for t, n in seats if t <= at]
        self.cancel(customer_id, at=at, status="replaced")
        return self.subscribe(customer_id, plan_id, at=at, seats=held[-1] if held else 1, version=version,
                              previous_id=old.id)

    # -------------------------------------------------------------------- credits
    def grant_credits(self, customer_id: str, amount: Decimal, *, at: datetime, expires_at: datetime | None = None,
                      name: str = "Prepaid credits", grant_id: str | None = None,
                      applies_to: tuple[str, ...] | None = None) -> CreditGrantRow:
        check_instant(at, "at")
        customer = self.customer(customer_id)
        if not isinstance(amount, Decimal) or not amount.is_finite() or not 0 < amount <= MAX_CREDIT:
            raise BillingError(f"a credit grant must be a positive amount of at most {MAX_CREDIT:,}",
                               code=ErrorCode.VALIDATION)
        if amount != amount.quantize(Decimal("0.000001")):
            raise BillingError("a credit grant has at most 6 decimal places", code=ErrorCode.VALIDATION)
        if grant_id is not None:
            check_text("grant id", grant_id, 200)
        check_text("name", name, 200)
        if expires_at is not None:
            check_instant(expires_at, "expires_at")
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
