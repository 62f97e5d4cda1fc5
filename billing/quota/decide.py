"""The quota decision: plan + usage state + request -> allow / downgrade / deny. Pure.

No database, HTTP or clock: the caller passes ``now`` and the usage it read (committed
usage, live holds, rate-window counts, task usage, credit balance). The same function
answers ``check`` (read-only) and ``reserve`` (the ledger layer calls it under a lock and
turns an allow/downgrade into a hold).

Rules, per usage charge on the requested meter (a request may name a charge or a meter;
a meter with several charges is decided by the strictest of them):

* **Included units first.** ``used + held + quantity <= included`` -> allow on the
  ``fast`` lane, reason ``included``. A request that does not fit entirely is decided by
  the exhaustion policy as a whole. A charge without ``included`` has an allowance of 0.
* **Exhaustion policies.**
  ``block`` -> deny ``quota_exhausted``, retry after the period ends.
  ``downgrade`` -> downgrade to the ``slow`` lane (the policy's model), reason
  ``slow_tier``; with a rate limit, deny ``rate_limited`` once the window is full
  (retry when the window ends).
  ``rate_limit`` -> allow on the ``overage`` lane, reason ``overage``, at most
  ``limit`` per window, else deny ``rate_limited``.
  ``overage`` -> allow on the ``overage`` lane while the charge's spend (after this
  request) stays within its ``spend_cap`` (+ usable credits), else deny
  ``spend_cap_reached`` (retry after the period ends).
* **Plan spend cap.** The plan's total usage spend after the request must stay within
  ``spend_cap`` + remaining credit balance (prepaid grants and the plan's recurring
  credits count as extra money budget before the cap).
* **Agent task limits** (``agent_limits``, when the request names a task): the task's
  steps, tokens and provider cost after the request must stay within the maxima, else deny
  ``task_limit``.
* **Dunning.** A payment overdue past ``dunning.deny_after_days`` denies everything
  (``payment_overdue``).

Spend is computed with the rating engine's charge models (``billing.rating.charges``) on
the billable units (past the included ones), made *monotone* (a volume price can drop when
usage grows; the decision uses the highest amount reached so far), so more usage never
turns a deny into an allow. Deny reasons in priority order: payment_overdue, task_limit,
quota_exhausted, rate_limited, spend_cap_reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal

from billing.catalog.schema import (
    BlockPolicy, OveragePolicy, Plan, RateLimit, RateLimitPolicy, SlowTierPolicy, UsageCharge, VolumePrice)
from billing.errors import BillingError, ErrorCode
from billing.money import dec_str
from billing.rating.charges import price_parts
from billing.rating.types import Billable

ZERO = Decimal(0)
ONE = Decimal(1)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

Outcome = Literal["allow", "downgrade", "deny"]
Tier = Literal["fast", "slow", "overage"]

# reason codes (stable strings)
INCLUDED = "included"
OVERAGE = "overage"
SLOW_TIER = "slow_tier"
SPEND_CAP_REACHED = "spend_cap_reached"
QUOTA_EXHAUSTED = "quota_exhausted"
RATE_LIMITED = "rate_limited"
TASK_LIMIT = "task_limit"
PAYMENT_OVERDUE = "payment_overdue"
REASONS = (INCLUDED, OVERAGE, SLOW_TIER, SPEND_CAP_REACHED, QUOTA_EXHAUSTED, RATE_LIMITED, TASK_LIMIT,
           PAYMENT_OVERDUE)
_DENY_PRIORITY = {PAYMENT_OVERDUE: 0, TASK_LIMIT: 1, QUOTA_EXHAUSTED: 2, RATE_LIMITED: 3, SPEND_CAP_REACHED: 4}
_RANK = {"allow": 0, "downgrade": 1, "deny": 2}


class UnknownMeter(BillingError):
    code = ErrorCode.VALIDATION


# ------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class MeterUsage:
    """Units, provider cost and event count of one meter (committed usage or live holds)."""

    units: Decimal = ZERO
    cost: Decimal = ZERO
    events: int = 0

    def __add__(self, other: "MeterUsage") -> "MeterUsage":
        return frozen(MeterUsage, {"units": self.units + other.units, "cost": self.cost + other.cost,
                                   "events": self.events + other.events})


_EMPTY = MeterUsage()


@dataclass(frozen=True)
class TaskUsage:
    """What one agent task (events sharing the task property) has used, holds included."""

    steps: int = 0
    tokens: int = 0
    cost: Decimal = ZERO


@dataclass(frozen=True)
class UsageState:
    """Everything the decision needs to know about the customer right now."""

    now: datetime
    period_start: datetime
    period_end: datetime
    usage: Mapping[str, MeterUsage] = field(default_factory=dict)  # committed, per meter
    held: Mapping[str, MeterUsage] = field(default_factory=dict)  # live holds, per meter
    seats: int = 1  # most seats held during the period (included per_seat uses it)
    credit_balance: Decimal = ZERO  # remaining prepaid grants (plan recurring credits are added here)
    credit_balances: Mapping[str, tuple[Decimal, tuple[str, ...] | None]] = field(default_factory=dict)
    task: TaskUsage | None = None  # usage of the request's task
    rate_counts: Mapping[str, int] = field(default_factory=dict)  # charge key -> grants in the current window
    payment_overdue: bool = False
    payment_failed_at: datetime | None = None  # oldest unpaid failed invoice (dunning clock)


@dataclass(frozen=True)
class QuotaRequest:
    customer: str
    key: str  # a meter key or a charge key
    quantity: Decimal = ONE
    model: str | None = None
    task: str | None = None
    tokens: int | None = None  # estimated tokens (agent limits); default: quantity on a *_tokens meter
    cost: Decimal = ZERO  # estimated provider cost of the call
    steps: int | None = None  # agent steps this request takes; default 1 when a task is named


# ------------------------------------------------------------------------ outputs

@dataclass(frozen=True)
class Lane:
    tier: Tier
    model: str | None = None


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    lane: Lane
    reason: str
    meter: str
    charges: tuple[str, ...]
    units: Decimal  # metered units this request counts for (quantity x multiplier)
    remaining: dict[str, Decimal | None]  # included units left per meter before the request; None: no allowance
    remaining_money: Decimal | None  # money left under the strictest cap before the request; None: uncapped
    spend: Decimal  # usage spend so far this period (holds included), before credits
    credits_remaining: Decimal
    retry_after: float | None = None  # seconds; set when waiting can turn the deny into an allow
    rate_windows: tuple[tuple[str, int, int], ...] = ()  # (charge, window start us, end us) a grant counts in
    amount: Decimal = ZERO  # spend this request adds (estimate)
    message: str = ""

    @property
    def granted(self) -> bool:
        return self.outcome != "deny"

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome, "allowed": self.granted, "reason": self.reason,
            "lane": {"tier": self.lane.tier, "model": self.lane.model},
            "meter": self.meter, "charges": list(self.charges), "units": dec_str(self.units),
            "remaining": {k: None if v is None else dec_str(v) for k, v in self.remaining.items()},
            "remaining_money": None if self.remaining_money is None else dec_str(self.remaining_money),
            "spend": dec_str(self.spend), "credits_remaining": dec_str(self.credits_remaining),
            "amount": dec_str(self.amount),
            "retry_after": self.retry_after, "message": self.message,
        }


# ----------------------------------------------------------------------- helpers

def rate_window(now: datetime, window_seconds: int) -> tuple[int, int]:
    """The fixed window (epoch-aligned) containing ``now``: (start us, end us)."""
    delta = now - EPOCH
    now_us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    size = window_seconds * 1_000_000
    start = now_us - now_us % size
    return start, start + size


def _seconds_until(now: datetime, end: datetime) -> float:
    return max(0.0, (end - now).total_seconds())


def _seconds_until_us(now: datetime, end_us: int) -> float:
    return _seconds_until(now, EPOCH + timedelta(microseconds=end_us))


def included_units(charge: UsageCharge, seats: int) -> Decimal:
    return charge.included.units(Decimal(seats)) if charge.included is not None else ZERO


def _raw_amount(charge: UsageCharge, units: Decimal, cost: Decimal, events: int, included: Decimal) -> Decimal:
    """The charge's amount for a period total (before its own spend cap)."""
    billable = max(ZERO, units - included)
    if billable <= 0:
        return ZERO
    policy = charge.on_exhaustion
    if isinstance(policy, SlowTierPolicy):
        return billable * policy.unit_price
    if charge.price is None:
        return ZERO
    share = billable / units if units > 0 else ZERO
    billed_events = events if included == 0 else int(events * share)
    usage = Billable(billable, cost * share, billed_events, (billable,))
    return sum((p.amount for p in price_parts(charge.price, usage)), ZERO)


def charge_spend(charge: UsageCharge, units: Decimal, cost: Decimal, events: int, included: Decimal) -> Decimal:
    """Monotone spend of a charge: the highest amount reached at any usage up to ``units``
    (only volume prices can fall as usage grows: their candidates are the tier ends)."""
    amount = _raw_amount(charge, units, cost, events, included)
    if isinstance(charge.price, VolumePrice) and not isinstance(charge.on_exhaustion, SlowTierPolicy):
        billable = units - included
        for tier in charge.price.tiers:
            if tier.up_to is not None and tier.up_to < billable:
                at = included + tier.up_to
                frac = at / units if units > 0 else ZERO
                amount = max(amount, _raw_amount(charge, at, cost * frac, int(events * frac), included))
    return amount


def _meter_units(plan: Plan, meter_key: str, quantity: Decimal, model: str | None) -> Decimal:
    meter = _index(plan).meters.get(meter_key) or plan.meter(meter_key)
    if meter.multipliers is not None and model is not None and meter.multipliers.property == "model":
        return quantity * meter.multipliers.factor({"model": model})
    return quantity


def resolve(plan: Plan, key: str) -> tuple[str, tuple[UsageCharge, ...]]:
    """(meter key, charges deciding it) for a request naming a charge or a meter."""
    hit = _index(plan).resolved.get(key)
    if hit is None:
        raise UnknownMeter(f"plan {plan.ref} has no meter or charge {key!r}")
    return hit


class _PlanIndex:
    """What ``decide`` looks up in a plan, computed once per plan object."""

    __slots__ = ("plan", "resolved", "charged", "meters", "charges", "included", "has_credits")

    def __init__(self, plan: Plan):
        self.plan = plan
        resolved: dict[str, tuple[str, tuple[UsageCharge, ...]]] = {}
        for m in plan.meters:
            resolved.setdefault(m.key, (m.key, tuple(c for c in plan.charges if c.meter == m.key)))
        for c in reversed(plan.charges):  # a charge key wins over a meter key; the first charge wins
            resolved[c.key] = (c.meter, (c,))
        self.resolved = resolved
        self.charged = frozenset(c.meter for c in plan.charges)
        self.meters = {m.key: m for m in plan.meters}
        # (charge, key, meter, has included, exhaustion policy, its spend cap)
        self.charges = tuple((c, c.key, c.meter, c.included is not None, c.on_exhaustion,
                              getattr(c.on_exhaustion, "spend_cap", None)) for c in plan.charges)
        self.included: dict[int, tuple[Decimal, ...]] = {}  # seats -> included units per charge
        self.has_credits = bool(plan.credits)

    def included_for(self, seats: int) -> tuple[Decimal, ...]:
        hit = self.included.get(seats)
        if hit is None:
            if len(self.included) > 1000:
                self.included.clear()
            hit = self.included[seats] = tuple(included_units(c, seats) for c in self.plan.charges)
        return hit


_INDEX: dict[int, _PlanIndex] = {}


def _index(plan: Plan) -> _PlanIndex:
    hit = _INDEX.get(id(plan))
    if hit is None or hit.plan is not plan:
        if len(_INDEX) > 10_000:
            _INDEX.clear()
        hit = _INDEX[id(plan)] = _PlanIndex(plan)
    return hit


def _charged_meters(plan: Plan) -> frozenset[str]:
    """Meters that some charge of the plan prices (cached per plan object)."""
    return _index(plan).charged


def plan_credit_amount(plan: Plan, seats: int) -> list[tuple[Decimal, tuple[str, ...] | None]]:
    return [(c.amount * (Decimal(seats) if c.per_seat else ONE), c.applies_to) for c in plan.credits]


def _credits_for(state: UsageState, plan: Plan, charge_key: str | None, has_credits: bool = True) -> Decimal:
    """Usable credit balance (grants + the plan's recurring credits) for one charge or, with
    ``None``, for the whole plan."""
    if not has_credits and not state.credit_balances and not state.credit_balance:
        return ZERO
    pools: list[tuple[Decimal, tuple[str, ...] | None]] = plan_credit_amount(plan, state.seats)
    if state.credit_balances:
        pools.extend(state.credit_balances.values())
    else:
        pools.append((state.credit_balance, None))
    return sum((amount for amount, applies in pools
                if amount > 0 and (charge_key is None or applies is None or charge_key in applies)), ZERO)


# ---------------------------------------------------------------------- decision

@dataclass
class _Verdict:
    outcome: Outcome
    tier: Tier
    reason: str
    model: str | None = None
    retry_after: float | None = None
    rate: tuple[str, int, int] | None = None
    message: str = ""


def decide(plan: Plan, state: UsageState, request: QuotaRequest) -> Decision:
    """Decide one request. Raises ``UnknownMeter`` for a key the plan does not meter."""
    idx = _index(plan)
    hit = idx.resolved.get(request.key)
    if hit is None:
        raise UnknownMeter(f"plan {plan.ref} has no meter or charge {request.key!r}")
    meter_key, charges = hit
    quantity = request.quantity if type(request.quantity) is Decimal else Decimal(request.quantity)
    if quantity < 0:
        raise BillingError("quantity must not be negative", code=ErrorCode.VALIDATION)
    cost = request.cost if type(request.cost) is Decimal else Decimal(request.cost)
    meter = idx.meters.get(meter_key) or plan.meter(meter_key)
    if meter.multipliers is not None and request.model is not None and meter.multipliers.property == "model":
        units = quantity * meter.multipliers.factor({"model": request.model})
    else:
        units = quantity
    now = state.now

    # usage (committed + held) of the charged meters; the request adds to its meter
    empty = _EMPTY
    totals: dict[str, MeterUsage] = {}
    usage_get, held_get = state.usage.get, state.held.get
    for key in idx.charged:
        used, held = usage_get(key), held_get(key)
        totals[key] = (used or empty) if held is None else (held if used is None else used + held)
    before = totals.get(meter_key)
    if before is None:
        used, held = usage_get(meter_key), held_get(meter_key)
        before = totals[meter_key] = (used or empty) if held is None else (held if used is None else used + held)
    after_m = frozen(MeterUsage, {"units": before.units + units, "cost": before.cost + cost,
                                  "events": before.events + (1 if units > 0 else 0)})

    spend_before = ZERO
    spend_after = ZERO
    per_charge_after: dict[str, Decimal] = {}
    per_charge_before: dict[str, Decimal] = {}
    included: dict[str, Decimal] = {}
    for (charge, ckey, cmeter, _has_inc, _policy, cap), inc in zip(idx.charges, idx.included_for(state.seats)):
        included[ckey] = inc
        m = totals[cmeter]
        b = ZERO if m.units <= inc else charge_spend(charge, m.units, m.cost, m.events, inc)
        a = b
        if cmeter == meter_key and after_m.units > inc:
            a = charge_spend(charge, after_m.units, after_m.cost, after_m.events, inc)
        per_charge_before[ckey], per_charge_after[ckey] = b, a
        if cap is not None:  # rating limits the line to the cap
            b, a = min(b, cap), min(a, cap)
        spend_before += b
        spend_after += a
    credits_all = _credits_for(state, plan, None, idx.has_credits)

    verdicts: list[_Verdict] = []

    # dunning
    overdue = state.payment_overdue or (
        state.payment_failed_at is not None
        and now - state.payment_failed_at >= timedelta(days=plan.dunning.deny_after_days))
    if overdue:
        verdicts.append(_Verdict("deny", "fast", PAYMENT_OVERDUE, message="an invoice payment is overdue"))

    # agent task limits
    limits = plan.agent_limits
    if limits is not None and request.task:
        task = state.task or TaskUsage()
        steps = request.steps if request.steps is not None else 1
        tokens = request.tokens
        if tokens is None:
            prop = plan.meter(meter_key).property or ""
            tokens = int(quantity) if prop.endswith("_tokens") else 0
        problems = []
        if limits.max_steps is not None and task.steps + steps > limits.max_steps:
            problems.append(f"steps {task.steps + steps} > {limits.max_steps}")
        if limits.max_tokens is not None and task.tokens + tokens > limits.max_tokens:
            problems.append(f"tokens {task.tokens + tokens} > {limits.max_tokens}")
        if limits.max_cost is not None and task.cost + Decimal(request.cost) > limits.max_cost:
            problems.append(f"cost {dec_str(task.cost + Decimal(request.cost))} > {dec_str(limits.max_cost)}")
        if problems:
            verdicts.append(_Verdict("deny", "fast", TASK_LIMIT,
                                     message=f"task {request.task!r} limit: " + ", ".join(problems)))

    # per charge
    remaining: dict[str, Decimal | None] = {}
    money_left: list[Decimal] = []
    for charge in charges:
        inc = included[charge.key]
        remaining[charge.meter] = max(ZERO, inc - before.units) if charge.included is not None else None
        policy = charge.on_exhaustion
        if after_m.units <= inc and charge.included is not None:
            verdicts.append(_Verdict("allow", "fast", INCLUDED, model=request.model))
            if isinstance(policy, OveragePolicy) and policy.spend_cap is not None:
                money_left.append(policy.spend_cap + _credits_for(state, plan, charge.key, idx.has_credits)
                                  - per_charge_before[charge.key])
            continue
        if isinstance(policy, BlockPolicy):
            verdicts.append(_Verdict("deny", "fast", QUOTA_EXHAUSTED, retry_after=_seconds_until(now, state.period_end),
                                     message=f"{charge.key}: {dec_str(inc)} included units used"))
        elif isinstance(policy, SlowTierPolicy):
            v = _Verdict("downgrade", "slow", SLOW_TIER, model=policy.model or request.model)
            verdicts.append(_rate_checked(v, charge.key, policy.rate_limit, state))
        elif isinstance(policy, RateLimitPolicy):
            v = _Verdict("allow", "overage", OVERAGE, model=request.model)
            verdicts.append(_rate_checked(v, charge.key, policy.rate_limit, state))
        else:  # overage
            cap = policy.spend_cap
            if cap is not None:
                budget = cap + _credits_for(state, plan, charge.key, idx.has_credits)
                money_left.append(budget - per_charge_before[charge.key])
                if per_charge_after[charge.key] > budget:
                    verdicts.append(_Verdict("deny", "overage", SPEND_CAP_REACHED,
                                             retry_after=_seconds_until(now, state.period_end),
                                             message=f"{charge.key}: spend cap {dec_str(cap)} reached"))
                    continue
            verdicts.append(_Verdict("allow", "overage", OVERAGE, model=request.model))

    if not charges:  # a meter without charges is not limited by them
        verdicts.append(_Verdict("allow", "fast", INCLUDED, model=request.model))

    # plan-wide spend cap (credits first)
    if plan.spend_cap is not None:
        budget = plan.spend_cap + credits_all
        money_left.append(budget - spend_before)
        if spend_after > budget:
            verdicts.append(_Verdict("deny", "overage", SPEND_CAP_REACHED,
                                     retry_after=_seconds_until(now, state.period_end),
                                     message=f"plan spend cap {dec_str(plan.spend_cap)} reached"))

    final = _combine(verdicts)
    return frozen(Decision, {
        "outcome": final.outcome, "lane": Lane(final.tier, final.model), "reason": final.reason, "meter": meter_key,
        "charges": tuple(c.key for c in charges), "units": units, "remaining": remaining,
        "remaining_money": max(ZERO, min(money_left)) if money_left else None,
        "spend": spend_before, "credits_remaining": max(ZERO, credits_all - spend_before),
        "retry_after": final.retry_after if final.outcome == "deny" else None,
        "rate_windows": tuple(v.rate for v in verdicts if v.rate is not None) if final.outcome != "deny" else (),
        "amount": max(ZERO, spend_after - spend_before), "message": final.message})


def frozen(cls: type, values: dict[str, Any]) -> Any:
    """An instance of the frozen dataclass ``cls`` from ALL its field values (the hot path:
    the generated ``__init__`` pays one ``object.__setattr__`` per field). Equal to
    ``cls(**values)``; a missing or unknown field is an error as it would be there."""
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = frozenset(f.name for f in fields(cls))
    if values.keys() != names:
        return cls(**values)  # let the dataclass report the problem
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


_FIELDS: dict[type, frozenset[str]] = {}


def _rate_checked(v: _Verdict, charge_key: str, limit: RateLimit | None, state: UsageState) -> _Verdict:
    if limit is None:
        return v
    start, end = rate_window(state.now, limit.window_seconds)
    if state.rate_counts.get(charge_key, 0) + 1 > limit.limit:
        return _Verdict("deny", v.tier, RATE_LIMITED, model=v.model, retry_after=_seconds_until_us(state.now, end),
                        message=f"{charge_key}: {limit.limit} per {limit.window_seconds}s")
    v.rate = (charge_key, start, end)
    return v


def _combine(verdicts: list[_Verdict]) -> _Verdict:
    if len(verdicts) == 1 and verdicts[0].outcome != "deny":
        v = verdicts[0]
        return _Verdict(v.outcome, v.tier, v.reason, v.model, None, None, v.message)
    worst = max(verdicts, key=lambda v: _RANK[v.outcome])
    if worst.outcome != "deny":
        # the strictest lane: slow beats overage beats fast
        order = {"fast": 0, "overage": 1, "slow": 2}
        same = [v for v in verdicts if v.outcome == worst.outcome]
        pick = max(same, key=lambda v: order[v.tier])
        return _Verdict(pick.outcome, pick.tier, pick.reason, pick.model, None, None, pick.message)
    denies = sorted((v for v in verdicts if v.outcome == "deny"), key=lambda v: _DENY_PRIORITY[v.reason])
    first = denies[0]
    # waiting helps only if every deny clears by waiting; wait for the latest of them
    waits = [v.retry_after for v in denies]
    first.retry_after = None if any(w is None for w in waits) else max(waits)
    return first
