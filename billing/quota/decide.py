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
* **Cost guards** (``cost_guard``, ``billing.quota.guards``): past a guard the call follows
  its policy -- ``alert`` (no change), ``downgrade`` (the slow lane on the guard's model,
  optionally rate limited), ``rate_limit`` or ``deny`` -- with reason ``cost_guard``; the
  decision's ``guard`` names the guard (``cost_cap``, ``margin_floor``, ``task_cost``).
* **What remains** (budget-aware agents): ``cost_remaining``, the provider cost left under
  the customer's cost guards, and for a task's call ``task``: its steps, tokens and cost
  left (``billing.quota.guards.task_remaining``), both before the request.
* **Dunning.** A payment overdue past ``dunning.deny_after_days`` denies everything
  (``payment_overdue``).

Amounts come from the one charge arithmetic (``billing.rating.arithmetic``) on the plan's
compiled form, so the ``spend`` a decision reports is what the invoice will bill for the
same usage (each charge rounded once, at most its spend cap; a percentage price with
per-transaction rules rates the committed transactions the caller read into
``MeterUsage.transactions``). Caps are held against the *peak* amount
(``arithmetic.peak_exact``, unrounded: a volume price can drop when usage grows; the
decision uses the highest amount reached so far), so more usage never turns a deny into
an allow. Deny reasons in priority order: payment_overdue, task_limit, cost_guard,
quota_exhausted, rate_limited, spend_cap_reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from billing.catalog.compiled import CompiledCharge, CompiledPlan
from billing.catalog.schema import BlockPolicy, Plan, RateLimit, RateLimitPolicy, SlowTierPolicy, UsageCharge
from billing.errors import BillingError, ErrorCode
from billing.money import dec_str, round_line
from billing.quota.budgets import BudgetHit, BudgetUse, judge
from billing.quota.guards import GuardHit, breaches, cost_remaining, held_cost, task_cost_after, task_remaining
from billing.rating import arithmetic
from billing.rating.types import Groups, merge_groups

ZERO = Decimal(0)
ONE = Decimal(1)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

class Outcome(StrEnum):
    ALLOW = "allow"
    DOWNGRADE = "downgrade"
    DENY = "deny"


Tier = Literal["fast", "slow", "overage"]


class Reason(StrEnum):
    """Why a decision is what it is (stable strings)."""

    INCLUDED = "included"
    OVERAGE = "overage"
    SLOW_TIER = "slow_tier"
    SPEND_CAP_REACHED = "spend_cap_reached"
    QUOTA_EXHAUSTED = "quota_exhausted"
    RATE_LIMITED = "rate_limited"
    TASK_LIMIT = "task_limit"
    PAYMENT_OVERDUE = "payment_overdue"
    COST_GUARD = "cost_guard"
    BUDGET = "budget_exceeded"


_DENY_PRIORITY = {Reason.PAYMENT_OVERDUE: 0, Reason.TASK_LIMIT: 1, Reason.COST_GUARD: 2, Reason.BUDGET: 3,
                  Reason.QUOTA_EXHAUSTED: 4, Reason.RATE_LIMITED: 5, Reason.SPEND_CAP_REACHED: 6}
_RANK = {Outcome.ALLOW: 0, Outcome.DOWNGRADE: 1, Outcome.DENY: 2}


class UnknownMeter(BillingError):
    code = ErrorCode.VALIDATION


# ------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class MeterUsage:
    """Units, provider cost and event count of one meter (committed usage or live holds).

    ``transactions``: the committed per-event values in time order, for a meter a
    percentage price rates one transaction at a time (``CompiledPlan.transaction_meters``);
    None when the caller did not read them (then the events count as equal amounts)."""

    units: Decimal = ZERO
    cost: Decimal = ZERO
    events: int = 0
    transactions: tuple[Decimal, ...] | None = None
    # per-value totals of a meter a dimension price splits (read from the events); units
    # beyond them (live holds, a request without the value) are priced at its default
    groups: Groups = ()

    def __add__(self, other: "MeterUsage") -> "MeterUsage":
        return frozen(MeterUsage, {"units": self.units + other.units, "cost": self.cost + other.cost,
                                   "events": self.events + other.events, "transactions": None,
                                   "groups": merge_groups(self.groups, other.groups)})


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
    provider_cost: Decimal = ZERO  # provider cost of every event of the period (read for cost guards)
    budgets: tuple[BudgetUse, ...] = ()  # the customer's budgets with their usage (billing.quota.budgets)


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
    retry: int | None = None  # which retry of its step this call is (0: the first attempt)
    depth: int | None = None  # sub-agent depth of the call (0: the top-level agent)
    properties: Mapping[str, Any] | None = None  # the event's scope properties (team, user, ...): budgets


# ------------------------------------------------------------------------ outputs

@dataclass(frozen=True)
class Lane:
    tier: Tier
    model: str | None = None


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    lane: Lane
    reason: Reason
    meter: str
    charges: tuple[str, ...]
    units: Decimal  # metered units this request counts for (quantity x multiplier)
    remaining: dict[str, Decimal | None]  # included units left per meter before the request; None: no allowance
    remaining_money: Decimal | None  # money left under the strictest cap before the request; None: uncapped
    spend: Decimal  # usage spend so far this period (holds included), before credits: what the invoice bills
    credits_remaining: Decimal
    retry_after: float | None = None  # seconds; set when waiting can turn the deny into an allow
    rate_windows: tuple[tuple[str, int, int], ...] = ()  # (charge, window start us, end us) a grant counts in
    amount: Decimal = ZERO  # spend this request adds (estimate)
    message: str = ""
    guard: str | None = None  # the cost guard that decided (or fired): cost_cap | margin_floor | task_cost
    cost_remaining: Decimal | None = None  # provider cost left under the customer's cost guards (None: none)
    task: dict[str, Any] | None = None  # a task's call: steps / tokens / cost left (None: unlimited figure)
    budget: dict[str, Any] | None = None  # the tightest budget the call counts against, before it (None: none)
    budget_parts: tuple[tuple[int, Decimal], ...] = ()  # (budget id, what the call adds): held with it
    budget_alerts: tuple[BudgetHit, ...] = ()  # the soft budgets the call passes (recorded as alerts)

    @property
    def granted(self) -> bool:
        return self.outcome != Outcome.DENY

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": str(self.outcome), "allowed": self.granted, "reason": str(self.reason),
            "lane": {"tier": self.lane.tier, "model": self.lane.model},
            "meter": self.meter, "charges": list(self.charges), "units": dec_str(self.units),
            "remaining": {k: None if v is None else dec_str(v) for k, v in self.remaining.items()},
            "remaining_money": None if self.remaining_money is None else dec_str(self.remaining_money),
            "spend": dec_str(self.spend), "credits_remaining": dec_str(self.credits_remaining),
            "amount": dec_str(self.amount),
            "retry_after": self.retry_after, "message": self.message, "guard": self.guard,
            "cost_remaining": None if self.cost_remaining is None else dec_str(self.cost_remaining),
            "task": None if self.task is None else {
                k: v if v is None or isinstance(v, int) else dec_str(v) for k, v in self.task.items()},
            **({"budget": self.budget} if self.budget is not None else {}),
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


def resolve(plan: Plan, key: str) -> tuple[str, tuple[UsageCharge, ...]]:
    """(meter key, charges deciding it) for a request naming a charge or a meter."""
    hit = plan.compiled.requests.get(key)
    if hit is None:
        raise UnknownMeter(f"plan {plan.ref} has no meter or charge {key!r}")
    return hit[0], tuple(c.charge for c in hit[1])


def plan_credit_amount(plan: Plan, seats: int) -> list[tuple[Decimal, tuple[str, ...] | None]]:
    """The plan's recurring credits at ``seats``: (amount, charge keys or None)."""
    return [(g.amount, g.applies_to) for g in arithmetic.recurring_credits(plan.compiled, seats)]


def _credits_for(state: UsageState, plan: CompiledPlan, charge_key: str | None) -> Decimal:
    """Usable credit balance (grants + the plan's recurring credits) for one charge or, with
    ``None``, for the whole plan."""
    if not plan.has_credits and not state.credit_balances and not state.credit_balance:
        return ZERO
    pools: list[tuple[Decimal, tuple[str, ...] | None]] = plan_credit_amount(plan.plan, state.seats)
    if state.credit_balances:
        pools.extend(state.credit_balances.values())
    else:
        pools.append((state.credit_balance, None))
    return sum((amount for amount, applies in pools
                if amount > 0 and (charge_key is None or applies is None or charge_key in applies)), ZERO)


def _equal_parts(m: MeterUsage | None) -> tuple[Decimal, ...]:
    """``m`` as its events of equal amounts (transactions a caller did not read, live holds)."""
    if m is None:
        return ()
    n = m.events or (1 if m.units > 0 else 0)
    return (m.units / n,) * n if n else ()


def committed_transactions(state: UsageState, meter: str) -> tuple[Decimal, ...]:
    """The meter's committed transactions in order (a per-transaction price)."""
    used = state.usage.get(meter)
    if used is None:
        return ()
    return _equal_parts(used) if used.transactions is None else used.transactions


def transactions_of(state: UsageState, meter: str) -> tuple[Decimal, ...]:
    """The meter's transactions, committed then held, in order (a per-transaction price)."""
    return committed_transactions(state, meter) + _equal_parts(state.held.get(meter))


# ---------------------------------------------------------------------- decision

@dataclass
class _Verdict:
    outcome: Outcome
    tier: Tier
    reason: Reason
    model: str | None = None
    retry_after: float | None = None
    rate: tuple[str, int, int] | None = None
    message: str = ""
    guard: str | None = None


def decide(plan: Plan, state: UsageState, request: QuotaRequest) -> Decision:
    """Decide one request. Raises ``UnknownMeter`` for a key the plan does not meter."""
    cp = plan.compiled
    hit = cp.requests.get(request.key)
    if hit is None:
        raise UnknownMeter(f"plan {plan.ref} has no meter or charge {request.key!r}")
    meter_key, charges = hit
    quantity = request.quantity if type(request.quantity) is Decimal else Decimal(request.quantity)
    if quantity < 0:
        raise BillingError("quantity must not be negative", code=ErrorCode.VALIDATION)
    cost = request.cost if type(request.cost) is Decimal else Decimal(request.cost)
    meter = cp.meter_by_key[meter_key]
    if meter.multipliers is not None and request.model is not None and meter.multipliers.property == "model":
        units = quantity * meter.multipliers.factor({"model": request.model})
    else:
        units = quantity

    totals, before, after = _meter_totals(cp, state, meter_key, units, cost, request.model)
    amounts = _charge_amounts(cp, state, totals, meter_key, after, units)
    credits_all = _credits_for(state, cp, None)

    verdicts: list[_Verdict] = []
    if _payment_overdue(plan, state):
        verdicts.append(_Verdict(Outcome.DENY, "fast", Reason.PAYMENT_OVERDUE, message="an invoice payment is overdue"))
    if plan.agent_limits is not None and (request.task or request.retry is not None or request.depth is not None):
        task_limit = _task_limit_verdict(plan, state, request, meter.property, quantity)
        if task_limit is not None:
            verdicts.append(task_limit)
    remaining, money_left = _charge_verdicts(cp, state, request, charges, amounts, before, after, verdicts)
    if not charges:  # a meter without charges is not limited by them
        verdicts.append(_Verdict(Outcome.ALLOW, "fast", Reason.INCLUDED, model=request.model))
    if plan.spend_cap is not None:  # plan-wide spend cap (credits first)
        budget = plan.spend_cap + credits_all
        money_left.append(budget - amounts.peak_before)
        if amounts.peak_after > budget:
            verdicts.append(_Verdict(Outcome.DENY, "overage", Reason.SPEND_CAP_REACHED,
                                     retry_after=_seconds_until(state.now, state.period_end),
                                     message=f"plan spend cap {dec_str(plan.spend_cap)} reached"))
    fired = None
    if plan.cost_guard is not None:
        fired = _guard_verdicts(plan, state, request, amounts.spend_after, credits_all, verdicts)
    spend_before = amounts.spend_before
    budget, parts, soft = None, (), ()
    if state.budgets:
        budget, parts, soft = _budget_verdicts(state, request, meter_key, before, units, cost,
                                               amounts.spend_after - spend_before, spend_before, verdicts)

    final = _combine(verdicts)
    return frozen(Decision, {
        "outcome": final.outcome, "lane": Lane(final.tier, final.model), "reason": final.reason, "meter": meter_key,
        "charges": tuple(c.key for c in charges), "units": units, "remaining": remaining,
        "remaining_money": max(ZERO, min(money_left)) if money_left else None,
        "spend": spend_before, "credits_remaining": max(ZERO, credits_all - spend_before),
        "retry_after": final.retry_after if final.outcome == Outcome.DENY else None,
        "rate_windows": tuple(v.rate for v in verdicts if v.rate is not None) if final.outcome != Outcome.DENY else (),
        "amount": max(ZERO, amounts.spend_after - spend_before), "message": final.message or (
            fired.message if fired is not None else ""),
        "guard": final.guard or (fired.guard if fired is not None else None),
        "cost_remaining": cost_remaining(plan, state, spend_before, credits_all) if plan.cost_guard else None,
        "task": task_remaining(plan, state) if request.task else None,
        "budget": budget, "budget_parts": parts, "budget_alerts": soft})


def _meter_totals(cp: CompiledPlan, state: UsageState, meter_key: str, units: Decimal, cost: Decimal,
                  model: str | None = None) -> tuple[dict[str, MeterUsage], MeterUsage, MeterUsage]:
    """Usage (committed + held) of the charged meters and of the requested one, and the
    requested meter's usage after the request: (totals, before, after)."""
    empty = _EMPTY
    totals: dict[str, MeterUsage] = {}
    usage_get, held_get = state.usage.get, state.held.get
    for key in cp.charged_meters:
        used, held = usage_get(key), held_get(key)
        totals[key] = (used or empty) if held is None else (held if used is None else used + held)
    before = totals.get(meter_key)
    if before is None:
        used, held = usage_get(meter_key), held_get(meter_key)
        before = totals[meter_key] = (used or empty) if held is None else (held if used is None else used + held)
    by_value = cp.group_meters.get(meter_key)  # the request's own value, when it names it (its model)
    groups = merge_groups(before.groups, ((model, units, cost, 1),)) if by_value == "model" and model else \
        before.groups
    after = frozen(MeterUsage, {"units": before.units + units, "cost": before.cost + cost,
                                "events": before.events + (1 if units > 0 else 0), "transactions": None,
                                "groups": groups})
    return totals, before, after


@dataclass(slots=True)
class _Amounts:
    """Per plan: the spend the invoice will bill (each charge rounded once, at most its cap)
    before and after the request, and the exact peak amounts caps are held against (a
    charge's peak counts at most its cap); per charge: its peaks and included units."""

    spend_before: Decimal
    spend_after: Decimal
    peak_before: Decimal
    peak_after: Decimal
    charge_peaks: dict[str, tuple[Decimal, Decimal]]  # charge key -> (before, after)
    included: dict[str, Decimal]


def _charge_amounts(cp: CompiledPlan, state: UsageState, totals: Mapping[str, MeterUsage], meter_key: str,
                    after_m: MeterUsage, units: Decimal) -> _Amounts:
    """Every charge's amounts before and after the request (``arithmetic``'s one rule)."""
    currency = cp.currency
    spend_before = spend_after = peak_before = peak_after = ZERO
    charge_peaks: dict[str, tuple[Decimal, Decimal]] = {}
    included: dict[str, Decimal] = {}
    exact_of, peak_of, billed = arithmetic.exact_charge, arithmetic.peak_exact, arithmetic.billed
    for charge, inc in zip(cp.charges, arithmetic.included_by_charge(cp, state.seats)):
        included[charge.key] = inc
        cmeter = charge.meter
        m = totals[cmeter]
        tx = transactions_of(state, cmeter) if charge.per_transaction else ()
        if charge.capacity_meters:  # its tier: the peaks of its meters, the requested one's after it
            peaks = arithmetic.capacity_peaks(charge, totals)
            b, pb = exact_of(charge, m.units, peaks=peaks), peak_of(charge, m.units, peaks=peaks)
            if meter_key in charge.capacity_meters:
                after_peaks = tuple(after_m.units if key == meter_key else p
                                    for key, p in zip(charge.capacity_meters, peaks))
                a, pa = exact_of(charge, m.units, peaks=after_peaks), peak_of(charge, m.units, peaks=after_peaks)
            else:
                a, pa = b, pb
        else:
            b = exact_of(charge, m.units, m.cost, m.events, tx, inc, groups=m.groups)
            pb = peak_of(charge, m.units, m.cost, m.events, tx, inc) if charge.volume_ends else b
            if cmeter == meter_key:
                tx_after = tx + (units,) if charge.per_transaction else ()
                a = exact_of(charge, after_m.units, after_m.cost, after_m.events, tx_after, inc, groups=after_m.groups)
                pa = peak_of(charge, after_m.units, after_m.cost, after_m.events, tx_after, inc) \
                    if charge.volume_ends else a
            else:
                a, pa = b, pb
        charge_peaks[charge.key] = (pb, pa)
        if b:
            spend_before += billed(charge, round_line(b, currency))
        if a:
            spend_after += billed(charge, round_line(a, currency))
        cap = charge.spend_cap
        if cap is not None:  # rating limits the charge to its cap
            pb, pa = min(pb, cap), min(pa, cap)
        peak_before += pb
        peak_after += pa
    return _Amounts(spend_before, spend_after, peak_before, peak_after, charge_peaks, included)


def _payment_overdue(plan: Plan, state: UsageState) -> bool:
    """Dunning: an overdue payment, or a failed one older than ``dunning.deny_after_days``."""
    return state.payment_overdue or (
        state.payment_failed_at is not None
        and state.now - state.payment_failed_at >= timedelta(days=plan.dunning.deny_after_days))


def _task_limit_verdict(plan: Plan, state: UsageState, request: QuotaRequest, meter_property: str | None,
                        quantity: Decimal) -> _Verdict | None:
    """A ``task_limit`` deny when the request's agent task would pass a limit, else None."""
    limits = plan.agent_limits
    assert limits is not None
    task = state.task or TaskUsage()
    problems = []
    if limits.max_retries is not None and request.retry is not None and request.retry > limits.max_retries:
        problems.append(f"retry {request.retry} > {limits.max_retries}")
    if limits.max_depth is not None and request.depth is not None and request.depth > limits.max_depth:
        problems.append(f"depth {request.depth} > {limits.max_depth}")
    if not request.task:
        return _Verdict(Outcome.DENY, "fast", Reason.TASK_LIMIT, message="agent limit: " + ", ".join(problems)) \
            if problems else None
    steps = request.steps if request.steps is not None else 1
    tokens = request.tokens
    if tokens is None:
        tokens = int(quantity) if (meter_property or "").endswith("_tokens") else 0
    if limits.max_steps is not None and task.steps + steps > limits.max_steps:
        problems.append(f"steps {task.steps + steps} > {limits.max_steps}")
    if limits.max_tokens is not None and task.tokens + tokens > limits.max_tokens:
        problems.append(f"tokens {task.tokens + tokens} > {limits.max_tokens}")
    if limits.max_cost is not None and (cost := task_cost_after(state, request)) > limits.max_cost:
        problems.append(f"cost {dec_str(cost)} > {dec_str(limits.max_cost)}")
    if not problems:
        return None
    return _Verdict(Outcome.DENY, "fast", Reason.TASK_LIMIT,
                    message=f"task {request.task!r} limit: " + ", ".join(problems))


def _charge_verdicts(cp: CompiledPlan, state: UsageState, request: QuotaRequest, charges: tuple[CompiledCharge, ...],
                     amounts: _Amounts, before: MeterUsage, after: MeterUsage, verdicts: list[_Verdict]
                     ) -> tuple[dict[str, Decimal | None], list[Decimal]]:
    """Append each deciding charge's verdict (included units, then its exhaustion policy);
    return the included units left per meter and the money left under each charge's cap."""
    now = state.now
    remaining: dict[str, Decimal | None] = {}
    money_left: list[Decimal] = []
    for charge in charges:
        inc = amounts.included[charge.key]
        remaining[charge.meter] = max(ZERO, inc - before.units) if charge.included is not None else None
        policy = charge.policy
        if after.units <= inc and charge.included is not None:
            verdicts.append(_Verdict(Outcome.ALLOW, "fast", Reason.INCLUDED, model=request.model))
            if charge.spend_cap is not None:
                money_left.append(charge.spend_cap + _credits_for(state, cp, charge.key)
                                  - amounts.charge_peaks[charge.key][0])
            continue
        if isinstance(policy, BlockPolicy):
            verdicts.append(_Verdict(Outcome.DENY, "fast", Reason.QUOTA_EXHAUSTED,
                                     retry_after=_seconds_until(now, state.period_end),
                                     message=f"{charge.key}: {dec_str(inc)} included units used"))
        elif isinstance(policy, SlowTierPolicy):
            v = _Verdict(Outcome.DOWNGRADE, "slow", Reason.SLOW_TIER, model=policy.model or request.model)
            verdicts.append(_rate_checked(v, charge.key, policy.rate_limit, state))
        elif isinstance(policy, RateLimitPolicy):
            v = _Verdict(Outcome.ALLOW, "overage", Reason.OVERAGE, model=request.model)
            verdicts.append(_rate_checked(v, charge.key, policy.rate_limit, state))
        else:  # overage
            cap = charge.spend_cap
            if cap is not None:
                budget = cap + _credits_for(state, cp, charge.key)
                peak_b, peak_a = amounts.charge_peaks[charge.key]
                money_left.append(budget - peak_b)
                if peak_a > budget:
                    verdicts.append(_Verdict(Outcome.DENY, "overage", Reason.SPEND_CAP_REACHED,
                                             retry_after=_seconds_until(now, state.period_end),
                                             message=f"{charge.key}: spend cap {dec_str(policy.spend_cap)} reached"))
                    continue
            verdicts.append(_Verdict(Outcome.ALLOW, "overage", Reason.OVERAGE, model=request.model))
    return remaining, money_left


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
        return _Verdict(Outcome.DENY, v.tier, Reason.RATE_LIMITED, model=v.model,
                        retry_after=_seconds_until_us(state.now, end),
                        message=f"{charge_key}: {limit.limit} per {limit.window_seconds}s", guard=v.guard)
    v.rate = (charge_key, start, end)
    return v


def _guard_verdicts(plan: Plan, state: UsageState, request: QuotaRequest, spend_after: Decimal, credits: Decimal,
                    verdicts: list[_Verdict]) -> GuardHit | None:
    """Append the verdict of each cost guard the request passes (``billing.quota.guards``)
    whose policy changes the call; return the first guard passed (None: none)."""
    hits = breaches(plan, state, request, spend_after, credits)
    for hit in hits:
        policy, name = hit.policy, hit.guard
        if policy.policy == "deny":
            wait = _seconds_until(state.now, state.period_end) if name == "cost_cap" else None
            verdicts.append(_Verdict(Outcome.DENY, "fast", Reason.COST_GUARD, retry_after=wait, message=hit.message,
                                     guard=name))
        elif policy.policy == "downgrade":
            v = _Verdict(Outcome.DOWNGRADE, "slow", Reason.COST_GUARD, model=policy.model, message=hit.message,
                         guard=name)
            verdicts.append(_rate_checked(v, f"guard:{name}", policy.rate_limit, state))
        elif policy.policy == "rate_limit":
            v = _Verdict(Outcome.ALLOW, "overage", Reason.COST_GUARD, model=request.model, message=hit.message,
                         guard=name)
            verdicts.append(_rate_checked(v, f"guard:{name}", policy.rate_limit, state))
    return hits[0] if hits else None


def _budget_verdicts(state: UsageState, request: QuotaRequest, meter_key: str, before: MeterUsage, units: Decimal,
                     cost: Decimal, amount: Decimal, spend_before: Decimal, verdicts: list[_Verdict]):
    """Append the verdict of each hard budget the request passes (``billing.quota.budgets``);
    return the tightest budget (JSON), the request's part in each budget and the soft ones passed."""
    counters = {"billed": spend_before, "cost": state.provider_cost + held_cost(state),
                f"units:{meter_key}": before.units}
    hits, tightest, parts = judge(state.budgets, meter_key, request.properties, units, cost, max(ZERO, amount),
                                  counters)
    soft = []
    for hit in hits:
        b = hit.budget
        if b.policy == "deny":
            verdicts.append(_Verdict(Outcome.DENY, "fast", Reason.BUDGET, retry_after=_seconds_until(state.now, hit.end),
                                     message=hit.message))
        elif b.policy == "downgrade":
            verdicts.append(_Verdict(Outcome.DOWNGRADE, "slow", Reason.BUDGET, model=b.model, message=hit.message))
        else:
            soft.append(hit)
    if hits and tightest is not None and hits[0].budget.enforcement == "hard":
        tightest = {**tightest, "passed": hits[0].budget.name}
    return tightest, tuple(sorted(parts.items())), tuple(soft)


def _combine(verdicts: list[_Verdict]) -> _Verdict:
    if len(verdicts) == 1 and verdicts[0].outcome != Outcome.DENY:
        v = verdicts[0]
        return _Verdict(v.outcome, v.tier, v.reason, v.model, None, None, v.message, v.guard)
    worst = max(verdicts, key=lambda v: _RANK[v.outcome])
    if worst.outcome != Outcome.DENY:
        # the strictest lane: slow beats overage beats fast
        order = {"fast": 0, "overage": 1, "slow": 2}
        same = [v for v in verdicts if v.outcome == worst.outcome]
        pick = max(same, key=lambda v: (order[v.tier], v.guard is not None))  # a tie: the cost guard's
        return _Verdict(pick.outcome, pick.tier, pick.reason, pick.model, None, None, pick.message, pick.guard)
    denies = sorted((v for v in verdicts if v.outcome == Outcome.DENY), key=lambda v: _DENY_PRIORITY[v.reason])
    first = denies[0]
    # waiting helps only if every deny clears by waiting; wait for the latest of them
    waits = [v.retry_after for v in denies]
    first.retry_after = None if any(w is None for w in waits) else max(waits)
    return first
