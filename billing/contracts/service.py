"""``Contracts``: the one door (CLI and API) to a subscription's contract -- dated overrides
of its plan version, coupons and their redemptions, term commitments. Every input is
checked here; a bad one is a ``BillingError`` naming the field (``contract_invalid``, with
every problem in ``details`` for overrides), never a silent default.

Finalized invoices never change: nothing may start inside a period already invoiced
(``period_invoiced``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from billing.catalog import Catalog, Plan
from billing.catalog.overrides import Override, override_problems
from billing.errors import BillingError, ErrorCode
from billing.ledger.accounts import check_currency, check_instant, check_row_id, check_text
from billing.money import minor_units, to_minor
from billing.store import repository
from billing.store.models import (
    AddOnSubscription, ContractOverride, Coupon, CouponRedemption, Customer, Subscription, TermCommitmentRow)

MAX_OVERRIDES = 100  # per request
MAX_PERIODS = 1200  # a repeating coupon: at most 100 years of months
MAX_AMOUNT = Decimal(10**12)
COUPON_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,79}$")
DURATIONS = ("once", "repeating", "forever")
SCOPES = ("usage", "all")


def _invalid(message: str, details: Any = None) -> BillingError:
    return BillingError(message, code=ErrorCode.CONTRACT_INVALID, details=details)


MAX_VALUE_DEPTH = 16  # nesting of an override's value (a price with tiers is 3)


def exact_json(value: Any, field: str = "value", depth: int = 0) -> Any:
    """A JSON value with its floats as the decimal text they were written as (``0.1`` ->
    ``"0.1"``): money in a plan is Decimal, never float."""
    if depth > MAX_VALUE_DEPTH:
        raise _invalid(f"{field}: nested deeper than {MAX_VALUE_DEPTH} levels")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return {str(k): exact_json(v, field, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [exact_json(v, field, depth + 1) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


def _decimal(value: object, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
        raise _invalid(f"{field}: must be a number (exact decimal text such as \"20\" or \"12.50\")")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise _invalid(f"{field}: {value!r} is not a number") from None
    if not number.is_finite():
        raise _invalid(f"{field}: must be a finite number")
    return number


def _money(value: object, field: str, currency: str) -> Decimal:
    """A positive amount of at most the currency's decimals."""
    amount = _decimal(value, field)
    if not 0 < amount <= MAX_AMOUNT:
        raise _invalid(f"{field}: must be more than 0 and at most {MAX_AMOUNT:,}")
    if amount != amount.quantize(Decimal(1).scaleb(-minor_units(currency))):
        raise _invalid(f"{field}: {currency} has {minor_units(currency)} decimal places, got {amount}")
    return amount


def addon_problems(addon: Plan, base: Plan) -> list[str]:
    """Why ``addon`` cannot be rated into invoices of ``base`` (empty: it can)."""
    problems = []
    metered = [name for name, value in (("meters", addon.meters), ("charges", addon.charges),
                                        ("credits", addon.credits), ("minimum_commitment", addon.minimum_commitment),
                                        ("spend_cap", addon.spend_cap)) if value]
    if metered:
        problems.append(f"an add-on plan has fees only; it has {', '.join(metered)} (the base plan prices usage: "
                        f"override it instead)")
    if not addon.fees:
        problems.append("an add-on plan needs at least one fee")
    if addon.currency != base.currency:
        problems.append(f"it bills in {addon.currency}, the base in {base.currency}")
    if addon.billing.interval != base.billing.interval:
        problems.append(f"it bills every {addon.billing.interval}, the base every {base.billing.interval}")
    if addon.trial_days:
        problems.append("an add-on has no trial (trial_days must be 0)")
    return problems


def _choice(value: object, field: str, options: Sequence[str]) -> str:
    if value not in options:
        raise _invalid(f"{field}: must be one of {', '.join(options)}, got {value!r}")
    return value


class Contracts:
    def __init__(self, engine: Engine, catalog: Catalog):
        self.engine = engine
        self.catalog = catalog

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _subscription(self, s: Session, subscription_id: int) -> Subscription:
        check_row_id(subscription_id, "subscription id")
        sub = s.get(Subscription, subscription_id)
        if sub is None:
            raise BillingError(f"unknown subscription {subscription_id}", code=ErrorCode.SUBSCRIPTION_NOT_FOUND)
        return sub

    @staticmethod
    def _not_invoiced(s: Session, sub: Subscription, at: datetime, field: str) -> None:
        until = repository.invoiced_until(s, sub.id)
        until = until.replace(tzinfo=until.tzinfo or UTC) if until is not None else None
        if until is not None and until > at:
            raise BillingError(f"{field}: subscription {sub.id} is invoiced until {until.isoformat()}; finalized "
                               f"invoices never change: start at {until.isoformat()} or later",
                               code=ErrorCode.PERIOD_INVOICED)

    # ------------------------------------------------------------------ overrides
    def add_overrides(self, subscription_id: int, overrides: Sequence[Mapping[str, Any]], *,
                      now: datetime) -> list[ContractOverride]:
        """Store dated overrides of the subscription's plan version (all or none): each
        ``{"path", "value", "starts_at", "ends_at"?}``, checked with the subscription's
        existing ones (``catalog.overrides.override_problems``)."""
        if not overrides or len(overrides) > MAX_OVERRIDES:
            raise _invalid(f"overrides: give 1-{MAX_OVERRIDES} overrides")
        new: list[Override] = []
        for i, item in enumerate(overrides):
            if "value" not in item:
                raise _invalid(f"overrides[{i}].value: required (null to remove an optional value)")
            starts_at = check_instant(item.get("starts_at"), f"overrides[{i}].starts_at")
            ends_at = item.get("ends_at")
            if ends_at is not None:
                check_instant(ends_at, f"overrides[{i}].ends_at")
            new.append(Override(item.get("path"), exact_json(item["value"], f"overrides[{i}].value"), starts_at,
                                ends_at))
        with self._session() as s:
            sub = self._subscription(s, subscription_id)
            plan = self.catalog.get(sub.plan_id, sub.plan_version)
            rows = list(s.exec(select(ContractOverride).where(ContractOverride.subscription_id == sub.id)
                               .order_by(ContractOverride.id)).all())
            existing = [Override(r.path, json.loads(r.value), r.starts_at, r.ends_at) for r in rows]
            names = [f"override {r.id}" for r in rows] + [f"overrides[{i}]" for i in range(len(new))]
            problems = override_problems(plan, [*existing, *new], names)
            if problems:
                raise _invalid(f"{len(problems)} problem(s) with the overrides of subscription {sub.id} "
                               f"({plan.ref}):\n" + "\n".join(problems), details=problems)
            for i, o in enumerate(new):
                self._not_invoiced(s, sub, o.starts_at, f"overrides[{i}].starts_at")
            added = [ContractOverride(subscription_id=sub.id, path=o.path, value=json.dumps(o.value),
                                      starts_at=o.starts_at, ends_at=o.ends_at, created_at=now) for o in new]
            s.add_all(added)
            s.commit()
        return added

    # -------------------------------------------------------------------- coupons
    def create_coupon(self, code: str, *, duration: str, percent: object = None, amount: object = None,
                      currency: str | None = None, periods: int | None = None, applies_to: str = "all",
                      name: str = "", now: datetime) -> Coupon:
        """A coupon (idempotent for the same details): ``percent`` off (more than 0, at most
        100) or ``amount`` off in ``currency``, ``once`` / ``repeating`` (``periods``) /
        ``forever``, on ``usage`` or ``all`` lines."""
        if not isinstance(code, str) or not COUPON_CODE.match(code):
            raise _invalid("code: 1-80 letters, digits, '_' or '-', starting with a letter or digit")
        check_text("name", name, 200)
        _choice(duration, "duration", DURATIONS)
        _choice(applies_to, "applies_to", SCOPES)
        if (percent is None) == (amount is None):
            raise _invalid("percent / amount: give exactly one of them")
        row = Coupon(code=code, name=name, duration=duration, applies_to=applies_to, created_at=now)
        if percent is not None:
            value = _decimal(percent, "percent")
            if not 0 < value <= 100:
                raise _invalid(f"percent: must be more than 0 and at most 100, got {value}")
            if currency is not None:
                raise _invalid("currency: only an amount coupon has a currency")
            row.percent = format(value.normalize(), "f")
        else:
            if currency is None:
                raise _invalid("currency: required for an amount coupon")
            row.currency = check_currency(currency)
            row.amount_minor = to_minor(_money(amount, "amount", row.currency), row.currency)
        if duration == "repeating":
            if isinstance(periods, bool) or not isinstance(periods, int) or not 1 <= periods <= MAX_PERIODS:
                raise _invalid(f"periods: a repeating coupon lasts 1-{MAX_PERIODS} billing periods, got {periods!r}")
            row.periods = periods
        elif periods is not None:
            raise _invalid(f"periods: only a repeating coupon has a number of periods ({duration!r} does not)")
        with self._session() as s:
            existing = s.get(Coupon, code)
            if existing is not None:
                same = ("name", "percent", "amount_minor", "currency", "duration", "periods", "applies_to")
                if all(getattr(existing, f) == getattr(row, f) for f in same):
                    return existing
                raise BillingError(f"coupon {code!r} exists with other details", code=ErrorCode.CONFLICT)
            s.add(row)
            s.commit()
        return row

    def coupon(self, code: str) -> Coupon:
        with self._session() as s:
            row = s.get(Coupon, code) if isinstance(code, str) else None
        if row is None:
            raise BillingError(f"unknown coupon {code!r}", code=ErrorCode.COUPON_NOT_FOUND)
        return row

    def redeem(self, subscription_id: int, code: str, *, at: datetime, now: datetime) -> CouponRedemption:
        """Redeem a coupon on a subscription at ``at``: it applies to the invoices of the
        billing period containing ``at`` and, by its duration, the periods after it."""
        from billing.invoicing.service import cycle_for

        check_instant(at, "at")
        coupon = self.coupon(code)
        with self._session() as s:
            sub = self._subscription(s, subscription_id)
            if at < sub.started_at or (sub.ended_at is not None and at >= sub.ended_at):
                raise _invalid(f"at: subscription {sub.id} is not active at {at.isoformat()}")
            customer = s.get(Customer, sub.customer_id)
            if coupon.currency is not None and coupon.currency != customer.currency:
                raise BillingError(f"coupon {code!r} is in {coupon.currency}, customer {customer.id!r} is billed in "
                                   f"{customer.currency}", code=ErrorCode.CURRENCY_MISMATCH)
            self._not_invoiced(s, sub, at, "at")
            plan = self.catalog.get(sub.plan_id, sub.plan_version)
            cycle = cycle_for(sub, plan, customer.timezone)
            period = cycle.period_containing(at)
            ends_at = None
            if coupon.duration != "forever":
                for _ in range((coupon.periods or 1) - 1):
                    period = cycle.next_period(period)
                ends_at = period.end
            existing = s.exec(select(CouponRedemption).where(CouponRedemption.coupon_code == code,
                                                             CouponRedemption.subscription_id == sub.id)).first()
            if existing is not None:
                if existing.redeemed_at == at:
                    return existing  # idempotent
                raise BillingError(f"coupon {code!r} is already redeemed on subscription {sub.id} "
                                   f"(at {existing.redeemed_at.isoformat()})", code=ErrorCode.CONFLICT)
            row = CouponRedemption(coupon_code=code, subscription_id=sub.id, redeemed_at=at, ends_at=ends_at,
                                   created_at=now)
            s.add(row)
            s.commit()
        return row

    # --------------------------------------------------------- term commitments
    def add_commitment(self, subscription_id: int, amount: object, *, starts_at: datetime, ends_at: datetime,
                       applies_to: str = "all", name: str = "Contract commitment",
                       now: datetime) -> TermCommitmentRow:
        """A commitment of ``amount`` over the term [starts_at, ends_at), owed pro rata by the
        term's billing periods (``arithmetic.term_minimum``); terms of a subscription do not
        overlap."""
        check_instant(starts_at, "starts_at")
        check_instant(ends_at, "ends_at")
        if ends_at <= starts_at:
            raise _invalid(f"ends_at: must be after starts_at ({starts_at.isoformat()})")
        _choice(applies_to, "applies_to", SCOPES)
        check_text("name", name, 200)
        if not name:
            raise _invalid("name: must not be empty")
        with self._session() as s:
            sub = self._subscription(s, subscription_id)
            currency = s.get(Customer, sub.customer_id).currency
            value = _money(amount, "amount", currency)
            self._not_invoiced(s, sub, starts_at, "starts_at")
            for other in s.exec(select(TermCommitmentRow).where(TermCommitmentRow.subscription_id == sub.id)).all():
                if other.starts_at < ends_at and starts_at < other.ends_at:
                    raise _invalid(f"starts_at / ends_at: overlap term commitment {other.id} "
                                   f"({other.starts_at.isoformat()} .. {other.ends_at.isoformat()})")
            row = TermCommitmentRow(subscription_id=sub.id, name=name, amount_minor=to_minor(value, currency),
                                    starts_at=starts_at, ends_at=ends_at, applies_to=applies_to, created_at=now)
            s.add(row)
            s.commit()
        return row

    # ----------------------------------------------------------------- add-ons
    def add_addon(self, subscription_id: int, plan_id: str, *, at: datetime, version: int | None = None,
                  now: datetime) -> AddOnSubscription:
        """Attach an add-on subscription (the version of ``plan_id`` in force at ``at``, or
        ``version``) to a base subscription from ``at``: its fees are rated into the base's
        invoices. The add-on plan has fees only (the base plan meters the usage), bills in
        the same currency, on the same interval, without a trial. Idempotent: the same plan
        version from the same instant is the add-on already there."""
        check_instant(at, "at")
        check_text("plan", plan_id, 80)
        plan = self.catalog.get(plan_id, version) if version else self.catalog.resolve(plan_id, at)
        with self._session() as s:
            sub = self._subscription(s, subscription_id)
            if at < sub.started_at or (sub.ended_at is not None and at >= sub.ended_at):
                raise _invalid(f"at: subscription {sub.id} is not active at {at.isoformat()}")
            base = self.catalog.get(sub.plan_id, sub.plan_version)
            problems = addon_problems(plan, base)
            if problems:
                raise _invalid(f"plan: {plan.ref} cannot be an add-on of {base.ref}: " + "; ".join(problems),
                               details=problems)
            same = s.exec(select(AddOnSubscription).where(
                AddOnSubscription.subscription_id == sub.id, AddOnSubscription.plan_id == plan.plan,
                AddOnSubscription.plan_version == plan.version, AddOnSubscription.started_at == at)).first()
            if same is not None:
                return same  # idempotent: a retried request adds nothing twice
            self._not_invoiced(s, sub, at, "at")
            row = AddOnSubscription(subscription_id=sub.id, plan_id=plan.plan, plan_version=plan.version,
                                    started_at=at, created_at=now)
            s.add(row)
            s.commit()
        return row

    def end_addon(self, addon_id: int, *, at: datetime) -> AddOnSubscription:
        """End an add-on at ``at`` (its last period is prorated)."""
        check_instant(at, "at")
        check_row_id(addon_id, "add-on id")
        with self._session() as s:
            row = s.get(AddOnSubscription, addon_id)
            if row is None:
                raise BillingError(f"unknown add-on {addon_id}", code=ErrorCode.SUBSCRIPTION_NOT_FOUND)
            if row.ended_at is not None:
                if row.ended_at == at:
                    return row  # idempotent
                raise BillingError(f"add-on {addon_id} already ended at {row.ended_at.isoformat()}",
                                   code=ErrorCode.CONFLICT)
            if at <= row.started_at:
                raise _invalid(f"at: must be after the add-on's start ({row.started_at.isoformat()})")
            self._not_invoiced(s, self._subscription(s, row.subscription_id), at, "at")
            row.ended_at = at
            s.add(row)
            s.commit()
        return row

    # ---------------------------------------------------------------------- reads
    def contract(self, subscription_id: int) -> dict[str, list]:
        """The subscription's overrides, coupon redemptions (with their coupons) and term
        commitments."""
        with self._session() as s:
            sub = self._subscription(s, subscription_id)
            return {
                "subscription": sub.id, "currency": s.get(Customer, sub.customer_id).currency,
                "overrides": list(s.exec(select(ContractOverride).where(ContractOverride.subscription_id == sub.id)
                                         .order_by(ContractOverride.id)).all()),
                "coupons": list(s.exec(select(CouponRedemption, Coupon).join(Coupon)
                                       .where(CouponRedemption.subscription_id == sub.id)
                                       .order_by(CouponRedemption.id)).all()),
                "commitments": list(s.exec(select(TermCommitmentRow)
                                           .where(TermCommitmentRow.subscription_id == sub.id)
                                           .order_by(TermCommitmentRow.id)).all()),
                "addons": list(s.exec(select(AddOnSubscription).where(AddOnSubscription.subscription_id == sub.id)
                                      .order_by(AddOnSubscription.id)).all()),
            }

