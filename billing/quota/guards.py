"""Cost guardrails in the quota decision (pure): which of the plan's ``cost_guard`` guards
(``billing.catalog.guards``) a call would pass, judged on what the vendor pays.

* **provider cost to date**: the provider cost of every event of the customer's period
  (``UsageState.provider_cost``, the ledger's all-events counter), plus the estimated cost
  of the live holds and of the call itself (``QuotaRequest.cost``);
* **revenue to date**: what the invoice would bill so far -- the earned part of the flat and
  seat fees (``arithmetic.earned_fees`` over ``periods.prorate_fraction`` of the period
  elapsed at ``now``) plus the usage spend the decision computed with the one charge
  arithmetic, less the credits that spend draws;
* a task's cost: the task's provider cost (committed and held) plus the call's, exactly the
  figure ``agent_limits.max_cost`` is judged on (``task_cost_after``).

A guard is *passed* when its value after the call exceeds its limit: ``cost_cap`` when the
provider cost exceeds ``amount``; ``margin_floor`` when it exceeds ``revenue x (100 -
percent) / 100``; ``task_cost`` when the task's cost exceeds ``amount``. The same measures
on committed usage only are the alert subjects ``cost_guard:<name>`` (``alert_measures``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from billing.catalog.guards import CostGuard
from billing.catalog.schema import Plan
from billing.errors import BillingError, ErrorCode
from billing.rating.arithmetic import earned_fees
from billing.rating.periods import PRORATION_PRECISION, Period, prorate_fraction

ZERO = Decimal(0)
HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class GuardHit:
    guard: str  # cost_cap | margin_floor | task_cost
    policy: Any  # the guard's on_breach policy (billing.catalog.guards)
    value: Decimal  # provider cost (of the customer or the task) after the call
    limit: Decimal  # the most it may reach

    @property
    def message(self) -> str:
        what = "task provider cost" if self.guard == "task_cost" else "provider cost"
        return f"cost guard {self.guard}: {what} {_show(self.value)} > {_show(self.limit)}"


def _show(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.000001')).normalize():f}"


def held_cost(state: Any) -> Decimal:
    """Estimated provider cost of the customer's live holds (summed once per state: a
    decision's guards, what remains and its budgets ask for the same one)."""
    last = _LAST_HELD
    if last is not None and last[0] is state:
        return last[1]
    total = ZERO
    for m in state.held.values():
        total += m.cost
    _remember_held((state, total))
    return total


_LAST_HELD: tuple | None = None  # (state, its held cost): the last one summed


def _remember_held(entry: tuple) -> None:
    global _LAST_HELD
    _LAST_HELD = entry  # one reference swapped at once: a thread sees a whole entry


def task_cost_after(state: Any, request: Any) -> Decimal:
    """The request's task's provider cost (committed and held) with the request's estimate."""
    return (state.task.cost if state.task is not None else ZERO) + request.cost


@lru_cache(maxsize=4096)
def _period(start: datetime, end: datetime) -> Period:
    return Period(start, end)


def revenue_to_date(plan: Plan, state: Any, usage_spend: Decimal, credits: Decimal) -> Decimal:
    """What the invoice would bill for the period so far: earned fees + usage spend - credits drawn."""
    return _earned(plan, state) + usage_spend - min(credits, usage_spend)


def _earned(plan: Plan, state: Any) -> Decimal:
    """The fees earned by ``state.now`` (``arithmetic.earned_fees``), computed once per
    decision: its guards and what remains ask for the same state."""
    last = _LAST_EARNED
    if last is not None and last[0] is state and last[1] is plan:
        return last[2]
    earned = earned_fees(plan.compiled, state.seats, elapsed_fraction(state.period_start, state.now,
                                                                       state.period_end))
    _remember_earned((state, plan, earned))
    return earned


def elapsed_fraction(start: datetime, now: datetime, end: datetime) -> Decimal:
    """``periods.prorate_fraction(start, now, Period(start, end))`` (the rule), without its
    checks when ``now`` is inside the UTC period (a decision's case): the elapsed
    microseconds over the period's, at the proration precision.
    ``tests/properties/test_elapsed_fraction.py`` holds the two equal."""
    if start.tzinfo is not UTC or now.tzinfo is not UTC or end.tzinfo is not UTC or not start < now < end:
        return prorate_fraction(start, now, _period(start, end))
    return _PRORATION.divide(Decimal((now - start) // _MICROSECOND), Decimal((end - start) // _MICROSECOND))


_PRORATION = Context(prec=PRORATION_PRECISION)
_MICROSECOND = timedelta(microseconds=1)
_LAST_EARNED: tuple | None = None  # (state, plan, earned fees): the last one computed


def _remember_earned(entry: tuple) -> None:
    global _LAST_EARNED
    _LAST_EARNED = entry  # one reference swapped at once: a thread sees a whole entry


def margin_limit(percent: Decimal, revenue: Decimal) -> Decimal:
    """The most provider cost that keeps a margin of ``percent`` % on ``revenue``."""
    return max(ZERO, revenue) * (HUNDRED - percent) / HUNDRED


def breaches(plan: Plan, state: Any, request: Any, usage_spend_after: Decimal, credits: Decimal) -> list[GuardHit]:
    """The guards the request would pass, in ``GUARD_NAMES`` order."""
    spec = plan.cost_guard
    if spec is None:
        return []
    cost_after = state.provider_cost + held_cost(state) + request.cost
    hits = []
    for name, guard in spec.guards():
        if name == "cost_cap":
            value, limit = cost_after, guard.amount
        elif name == "margin_floor":
            value = cost_after
            limit = margin_limit(guard.percent, revenue_to_date(plan, state, usage_spend_after, credits))
        else:  # task_cost: only a call of an agent task
            if request.task is None:
                continue
            value, limit = task_cost_after(state, request), guard.amount
        if value > limit:
            hits.append(GuardHit(name, guard.on_breach, value, limit))
    return hits


@dataclass(frozen=True, slots=True)
class GuardMeasure:
    """A customer guard on committed usage: the alert subject ``cost_guard:<name>``."""

    subject: str
    value: Decimal
    limit: Decimal


def alert_measures(plan: Plan, state: Any, usage_spend: Decimal, credits: Decimal) -> list[GuardMeasure]:
    """``cost_cap`` and ``margin_floor`` on committed usage (``state.provider_cost``), for
    the budget alert path; the task guard is reported by the decision of the task's calls.
    Whale detection: a plan without a margin floor still alerts once provider cost exceeds
    revenue to date (``whale``: the margin floor's rule at 0 %); with a floor, the floor's
    own alert is the whale alert."""
    spec = plan.cost_guard
    out = []
    if spec is not None and spec.cost_cap is not None:
        out.append(GuardMeasure("cost_guard:cost_cap", state.provider_cost, spec.cost_cap.amount))
    floor = spec.margin_floor.percent if spec is not None and spec.margin_floor is not None else None
    limit = margin_limit(floor if floor is not None else ZERO,
                         revenue_to_date(plan, state, usage_spend, credits))
    out.append(GuardMeasure("cost_guard:margin_floor" if floor is not None else "whale", state.provider_cost, limit))
    return out


# ------------------------------------------------------------ a customer's own guards

_OWN: dict[tuple[int, str], tuple[Plan, Plan]] = {}  # (id(plan), guard JSON) -> (plan, its copy)


def parse_cost_guard(data: Any) -> CostGuard:
    """A customer's ``cost_guard`` (a mapping as a plan writes it), or a ``validation_error``
    listing every problem as ``path: message`` (``cost_guard.margin_floor.percent: ...``)."""
    try:
        return CostGuard.model_validate(data)
    except ValidationError as exc:
        problems = [f"cost_guard{''.join(f'.{p}' for p in e['loc'] )}: {e['msg']}"
                    for e in exc.errors()]
        raise BillingError("; ".join(problems), code=ErrorCode.VALIDATION, details={"problems": problems}) from None


def with_cost_guard(plan: Plan, guard_json: str) -> Plan:
    """``plan`` with a customer's stored guards in place of its own (compiled once per plan
    version and guard: the quota context cache asks for it on every load)."""
    key = (id(plan), guard_json)
    hit = _OWN.get(key)
    if hit is not None and hit[0] is plan:
        return hit[1]
    if len(_OWN) > 10_000:
        _OWN.clear()
    copy = plan.model_copy(update={"cost_guard": CostGuard.model_validate_json(guard_json)})
    _OWN[key] = (plan, copy)
    return copy


# ------------------------------------------------------------------ what remains

def cost_remaining(plan: Plan, state: Any, usage_spend: Decimal, credits: Decimal) -> Decimal | None:
    """Provider cost the customer may still use before its strictest guard (``cost_cap``,
    ``margin_floor`` on the revenue so far), before the request; None without either."""
    spec = plan.cost_guard
    if spec is None or (spec.cost_cap is None and spec.margin_floor is None):
        return None
    limits = []
    if spec.cost_cap is not None:
        limits.append(spec.cost_cap.amount)
    if spec.margin_floor is not None:
        limits.append(margin_limit(spec.margin_floor.percent, revenue_to_date(plan, state, usage_spend, credits)))
    return max(ZERO, min(limits) - state.provider_cost - held_cost(state))


def task_remaining(plan: Plan, state: Any) -> dict[str, Decimal | int | None] | None:
    """Steps, tokens and provider cost the request's task may still use (``agent_limits``
    maxima; the cost also under a ``task_cost`` guard), before the request; a figure the plan
    does not limit is None. None when the plan limits no task."""
    limits = plan.agent_limits
    guard = plan.cost_guard.task_cost if plan.cost_guard is not None else None
    if limits is None and guard is None:
        return None
    task = state.task
    steps, tokens, cost = (task.steps, task.tokens, task.cost) if task is not None else (0, 0, ZERO)
    max_cost = [c for c in ((limits.max_cost if limits else None), (guard.amount if guard else None)) if c is not None]
    return {"steps": None if limits is None or limits.max_steps is None else max(0, limits.max_steps - steps),
            "tokens": None if limits is None or limits.max_tokens is None else max(0, limits.max_tokens - tokens),
            "cost": max(ZERO, min(max_cost) - cost) if max_cost else None}
