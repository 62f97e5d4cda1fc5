"""Pricing advice: the value of one plan lever (``price_lever.py``) that reaches a target
gross margin for a segment of customers, and the break-even value for every segment. Pure.

Definitions:

- margin % of a group = (revenue - provider cost) / revenue x 100 over the group's customers
  (revenue: the rated invoice totals, cost: their provider cost, as ``billing simulate``);
  a target ``T`` (percent, -100 <= T < 100) is reached when ``revenue x (100 - T) >= 100 x cost``
  (so a group with neither revenue nor cost reaches every target);
- segments: ``all`` (every customer), the population's named segments (a spec's segments, or
  a history's usage bands, which may be named by their first word: ``heavy``), and ``P<p>`` (0 <= p <= 100): the one customer at the p-th
  percentile of provider cost by the *nearest-rank* method -- customers sorted by cost (ties
  by customer id), rank ``max(1, ceil(p / 100 x N))``; P0 is the cheapest, P100 the most
  expensive;
- the solve: revenue is monotone in the lever (non-decreasing in a price, non-increasing in
  included units), so an exact bisection over the lever's grid -- multiples of ``step`` (the
  currency's minor unit for money, 1 unit for included units, unless given) -- finds the
  smallest price (the largest included amount) that reaches the target: the exact answer
  rounded *up* to the grid for a price, *down* for included units. Every candidate is rated
  by ``billing.simulate.core.rate_totals`` (the fast path of ``rate_period``, the one charge
  arithmetic). The answer is re-rated to confirm it, and one step less generous (a price
  one step lower, one included unit more) is rated to show it does not reach the target;
- unreachable: a price that stops raising revenue (a spend cap, no usage past the included
  units) before the needed revenue, or included units that miss the target even at 0;
  ``unbounded``: every included amount reaches it;
- break-even: the same solve with a target of 0 %.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from billing.catalog.loader import MAX_NUMBER, number_problem
from billing.catalog.schema import Plan
from billing.money import dec_str, quantum, round_line
from billing.rating.periods import Period
from billing.simulate.core import CustomerTotals, rate_totals
from billing.simulate.price_lever import Lever, current_value, with_value

ZERO = Decimal(0)
HUNDRED = Decimal(100)
STANDARD_PERCENTILES = ("P50", "P90", "P99")
PERCENTILE_METHOD = ("nearest rank on provider cost: customers sorted by cost (ties by id), "
                     "the one at rank max(1, ceil(p/100 x N))")


class AdviceError(ValueError):
    """Bad input to the advice (the message names the option)."""


# ----------------------------------------------------------------------------- segments

def check_target(target: Decimal) -> Decimal:
    if not target.is_finite():
        raise AdviceError(f"--target-margin: not a number: {target}")
    if target >= HUNDRED:
        raise AdviceError(f"--target-margin {target}: no price reaches a margin of 100% or more -- margin = "
                          "(revenue - provider cost) / revenue stays below 100% while the provider cost is above 0, "
                          "whatever the price")
    if target < -HUNDRED:
        raise AdviceError(f"--target-margin {target}: below -100% (a plan billing half its provider cost is -100%)")
    return target


def percentile_rank(label: str) -> Decimal | None:
    """``P90`` -> 90 (None: not a percentile label); raises for P<p> outside 0-100."""
    if len(label) < 2 or label[0] not in "Pp":
        return None
    try:
        p = Decimal(label[1:])
    except ArithmeticError:
        return None
    if not p.is_finite() or not ZERO <= p <= HUNDRED:
        raise AdviceError(f"--segment {label}: a percentile is P0 to P100")
    return p


def segment_members(name: str, customers: Sequence[CustomerTotals]) -> list[CustomerTotals]:
    """The customers of a segment (see module docstring); raises AdviceError naming the valid ones."""
    if name == "all":
        return list(customers)
    p = percentile_rank(name)
    if p is not None:
        if not customers:
            raise AdviceError("no customers to take a percentile of")
        ordered = sorted(customers, key=lambda c: (c.cost, c.customer))
        rank = max(1, int((p * len(ordered) / HUNDRED).to_integral_value(ROUND_CEILING)))
        return [ordered[rank - 1]]
    members = [c for c in customers if c.segment == name]
    if not members:  # a usage band by its first word: "heavy" for "heavy (P90-P99]"
        members = [c for c in customers if c.segment.split(" (")[0] == name]
    if not members:
        named = ", ".join(named_segments(customers)) or "none"
        raise AdviceError(f"--segment {name!r}: not a segment (P0-P100, all, or one of the population's: {named})")
    return members


def named_segments(customers: Sequence[CustomerTotals]) -> list[str]:
    return list(dict.fromkeys(c.segment for c in customers if c.segment))


# ------------------------------------------------------------------------------- rating

@dataclass(frozen=True)
class Rated:
    """A group of customers rated under one value of the lever."""

    value: Decimal
    revenue: Decimal
    cost: Decimal

    def reaches(self, target: Decimal) -> bool:
        return self.revenue * (HUNDRED - target) >= HUNDRED * self.cost

    @property
    def margin_pct(self) -> Decimal | None:
        return None if self.revenue == 0 else (self.revenue - self.cost) / self.revenue * HUNDRED

    def to_json(self, currency: str) -> dict:
        return {"value": dec_str(self.value), "revenue": str(round_line(self.revenue, currency)),
                "cost": str(round_line(self.cost, currency)), "cost_exact": dec_str(self.cost),
                "margin_pct": _pct(self.margin_pct)}


def rate_group(plan: Plan, customers: Sequence[CustomerTotals], period: Period, lever: Lever,
               value: Decimal) -> Rated:
    candidate = with_value(plan, lever, value)
    results = rate_totals([candidate], customers, period).results[candidate.ref]
    return Rated(value, sum((r.revenue for r in results), ZERO), sum((r.cost for r in results), ZERO))


@dataclass(frozen=True)
class Solution:
    """The lever value reaching ``target`` for one group (``value`` None: see ``status``)."""

    target: Decimal
    status: str  # "reached" | "unreachable" | "unbounded"
    value: Decimal | None
    at_value: Rated | None  # the group re-rated at ``value``
    one_step_less: Rated | None  # a price one step lower / one more step of included units
    limit: Rated  # unreachable: the most revenue the lever gives; unbounded: the largest value tried
    needed_revenue: Decimal  # cost x 100 / (100 - target)

    def to_json(self, currency: str) -> dict:
        return {"target_margin_pct": dec_str(self.target), "status": self.status,
                "value": None if self.value is None else dec_str(self.value),
                "needed_revenue": dec_str(round_line(self.needed_revenue, currency)),
                "at_value": self.at_value.to_json(currency) if self.at_value else None,
                "one_step_less": self.one_step_less.to_json(currency) if self.one_step_less else None,
                "limit": self.limit.to_json(currency)}


def solve(plan: Plan, customers: Sequence[CustomerTotals], period: Period, lever: Lever, target: Decimal,
          step: Decimal) -> Solution:
    """Bisection on multiples of ``step`` (see module docstring)."""
    cache: dict[int, Rated] = {}

    def at(n: int) -> Rated:
        if n not in cache:
            cache[n] = rate_group(plan, customers, period, lever, step * n)
        return cache[n]

    def ok(n: int) -> bool:
        return at(n).reaches(target)

    top = int(MAX_NUMBER / step)
    cost = at(0).cost
    needed = cost * HUNDRED / (HUNDRED - target)
    if lever.increasing:
        if ok(0):
            return Solution(target, "reached", ZERO, at(0), None, at(0), needed)
        lo, hi = 0, 1  # ok(lo) is False
        while not ok(hi):
            if hi >= top:
                return Solution(target, "unreachable", None, None, None, at(hi), needed)
            lo, hi = hi, min(hi * 2, top)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if ok(mid) else (mid, hi)
        return Solution(target, "reached", step * hi, at(hi), at(hi - 1), at(hi), needed)
    if not ok(0):
        return Solution(target, "unreachable", None, None, None, at(0), needed)
    lo, hi = 0, 1  # ok(lo) is True
    while ok(hi):
        if hi >= top:
            return Solution(target, "unbounded", None, None, None, at(hi), needed)
        lo, hi = hi, min(hi * 2, top)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return Solution(target, "reached", step * lo, at(lo), at(lo + 1), at(lo), needed)


# ------------------------------------------------------------------------------- advice

@dataclass(frozen=True)
class SegmentAdvice:
    name: str
    customers: list[CustomerTotals]
    current: Rated  # under the plan as written
    target: Solution
    break_even: Solution

    @property
    def cost(self) -> Decimal:
        return self.current.cost

    def to_json(self, currency: str) -> dict:
        return {"segment": self.name, "customers": len(self.customers),
                "customer": self.customers[0].customer if len(self.customers) == 1 else None,
                "current": self.current.to_json(currency), "target": self.target.to_json(currency),
                "break_even": self.break_even.to_json(currency)}


@dataclass
class Advice:
    plan: Plan
    period: Period
    lever: Lever
    step: Decimal
    target: Decimal
    segment: str
    current_value: Decimal
    chosen: SegmentAdvice
    segments: list[SegmentAdvice] = field(default_factory=list)
    suggested_plan: Plan | None = None  # the plan with the chosen segment's value (None: no value)
    population_current: Rated | None = None
    population_suggested: Rated | None = None
    source: str = "synthetic"

    @property
    def currency(self) -> str:
        return self.plan.currency

    def to_json(self) -> dict:
        c = self.currency
        return {"plan": {"id": self.plan.plan, "version": self.plan.version, "ref": self.plan.ref,
                         "name": self.plan.name},
                "currency": c, "source": self.source,
                "period": {"start": _iso(self.period.start), "end": _iso(self.period.end), "label": self.period.label},
                "lever": {"kind": self.lever.kind, "key": self.lever.key, "text": str(self.lever),
                          "current": dec_str(self.current_value), "step": dec_str(self.step),
                          "revenue_moves": "up with the value" if self.lever.increasing else "down with the value"},
                "target_margin_pct": dec_str(self.target), "segment": self.segment,
                "percentile_method": PERCENTILE_METHOD,
                "suggestion": self.chosen.to_json(c),
                "population": {"current": self.population_current.to_json(c) if self.population_current else None,
                               "suggested": self.population_suggested.to_json(c)
                               if self.population_suggested else None},
                "segments": [s.to_json(c) for s in self.segments]}


def default_step(plan: Plan, lever: Lever) -> Decimal:
    return quantum(plan.currency) if lever.is_money else Decimal(1)


def advise(plan: Plan, customers: Sequence[CustomerTotals], period: Period, lever: Lever, target: Decimal,
           segment: str = "P90", step: Decimal | None = None, source: str = "synthetic") -> Advice:
    """Solve the lever for ``segment`` at ``target`` %, and every segment's break-even."""
    check_target(target)
    step = step if step is not None else default_step(plan, lever)
    if not step.is_finite() or step <= 0:
        raise AdviceError(f"--step: must be above 0, not {step}")
    if number_problem(step):  # every answer is a multiple of it, written into a plan
        raise AdviceError(f"--step {step}: {number_problem(step)}")
    if not customers:
        raise AdviceError("the population has no customers")
    current = current_value(plan, lever)
    names = list(dict.fromkeys([segment, "all", *named_segments(customers), *STANDARD_PERCENTILES]))
    groups = {name: segment_members(name, customers) for name in names}  # the chosen one first: named errors

    def one(name: str) -> SegmentAdvice:
        members = groups[name]
        return SegmentAdvice(name, members, rate_group(plan, members, period, lever, current),
                             solve(plan, members, period, lever, target, step),
                             solve(plan, members, period, lever, ZERO, step))

    segments = [one(name) for name in names]
    chosen = segments[0]
    suggested = with_value(plan, lever, chosen.target.value) if chosen.target.value is not None else None
    everyone = groups["all"]
    return Advice(plan, period, lever, step, target, segment, current, chosen, segments, suggested,
                  rate_group(plan, everyone, period, lever, current),
                  rate_group(plan, everyone, period, lever, chosen.target.value)
                  if chosen.target.value is not None else None, source)


def _pct(value: Decimal | None) -> str | None:
    return None if value is None else dec_str(value.quantize(Decimal("0.01"), ROUND_FLOOR))  # never above the real one


def _iso(t) -> str:
    return t.isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------- inputs

def population_totals(spec, plan: Plan, book, seed: int | None = None) -> tuple[Period, list[CustomerTotals]]:
    """A population spec's customers drawn (``seed``), with its levers applied, costed with
    ``book`` and aggregated under ``plan``'s meters -- once: every lever value rates these.
    The quota replay (``enforce_quota``) is left out: what it lets through depends on the very
    value being solved (a spend cap against a price, included units), so usage is as drawn."""
    from billing.simulate.core import Coster, book_for, customer_totals

    period, levers = spec.the_period(), spec.levers.model_copy(update={"enforce_quota": False})
    coster = Coster(book_for(book, levers), levers.cost_date)
    baseline = Coster(book) if not levers.is_identity else None
    return period, [customer_totals([plan], c, period, coster, levers, baseline) for c in spec.customer_inputs(seed)]
