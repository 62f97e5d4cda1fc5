"""Re-rate usage under candidate plans: revenue, provider cost and margin per customer,
per segment and per plan. Pure: no database, no clock; everything is passed in.

Two entry points:

- :func:`simulate` takes per-customer *events* (synthetic or read from the ledger), applies
  the what-if levers (:mod:`billing.simulate.levers`), costs every event with the cost
  book, aggregates each plan's meters (``billing.rating.meters.aggregate``, the same code
  previews use) and rates the period.
- :func:`rate_totals` takes per-customer ``MeterTotals`` directly (fast path: no events)
  and rates them with ``billing.rating.engine.rate_period``; :func:`simulate` ends here too.

Definitions used in every result:

- revenue: the rated invoice total (``rate_period``), exact to the cent;
- cost: the provider cost of all the customer's events in the period (exact, unrounded);
- margin = revenue - cost; margin % = margin / revenue x 100 (None when revenue is 0);
- break-even price per seat: the recurring price per seat which, *replacing* the plan's
  recurring fees (flat and per-seat) while usage charges stay as rated, makes total revenue
  equal total cost / (1 - target margin). Seats are those each customer holds (1 by default).
  It ignores interactions with minimum commitments and credits drawn against the fees.
- throttled: a customer whose usage went past the included units of a charge whose
  exhaustion policy is ``block``, ``downgrade`` or ``rate_limit`` (for ``rate_limit`` the
  units past the allowance were *subject to* the rate limit).
- movers: customers whose bill changes most against what they were actually billed
  (``actual``), or against the first (baseline) plan when there is no actual bill.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, localcontext

from billing.catalog.schema import BlockPolicy, Plan, RateLimitPolicy, SlowTierPolicy
from billing.costs import CostBook, UnknownModel, event_cost
from billing.events import UsageEvent
from billing.money import dec_str, round_line
from billing.rating.engine import RatingInput, rate_period
from billing.rating.meters import aggregate, dedupe
from billing.rating.periods import Period
from billing.rating.types import CreditGrant, LineKind, MeterTotals, RatedInvoice
from billing.reports.stats import MARGIN_EDGES, Bin, histogram, margin_pct, percentiles, round_pct
from billing.simulate.fastrate import FastRater, fast_path_applies
from billing.simulate.gate import GateCounts, gate_events
from billing.simulate.levers import Levers, apply_levers
from billing.simulate.sim_event import SimEvent

ZERO = Decimal(0)
ONE = Decimal(1)
_THROTTLING = {BlockPolicy: "block", SlowTierPolicy: "downgrade", RateLimitPolicy: "rate_limit"}


# ----------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class CustomerInput:
    """One customer's usage for a simulation."""

    customer: str
    events: Sequence[UsageEvent] = ()
    segment: str = ""
    seats: int = 1
    seat_changes: Sequence[tuple[datetime, int]] = ()  # overrides ``seats`` when given
    period: Period | None = None  # default: the simulation's period
    actual: Decimal | None = None  # what the customer was actually billed (history)
    actual_cost: Decimal | None = None
    actual_plan: str | None = None
    grants: Sequence[CreditGrant] = ()
    active_from: datetime | None = None  # subscription start inside the period (prorated like the close)
    active_until: datetime | None = None  # subscription end inside the period
    trial_end: datetime | None = None


@dataclass(frozen=True)
class CustomerTotals:
    """One customer's aggregated usage: meter totals (shared by meter key across plans, or
    per plan ref in ``usage_by_plan``) and the provider cost of the period."""

    customer: str
    usage: Mapping[str, MeterTotals] = field(default_factory=dict)
    cost: Decimal = ZERO
    segment: str = ""
    seats: int = 1
    seat_changes: Sequence[tuple[datetime, int]] = ()
    period: Period | None = None
    actual: Decimal | None = None
    actual_cost: Decimal | None = None
    actual_plan: str | None = None
    grants: Sequence[CreditGrant] = ()
    usage_by_plan: Mapping[str, Mapping[str, MeterTotals]] = field(default_factory=dict)
    baseline_cost: Decimal | None = None  # cost before the levers (None: no levers)
    interactions: int = 0
    active_from: datetime | None = None
    active_until: datetime | None = None
    trial_end: datetime | None = None
    cost_by_plan: Mapping[str, Decimal] = field(default_factory=dict)  # the quota replay: cost per plan ref
    gate_by_plan: Mapping[str, GateCounts] = field(default_factory=dict)

    def usage_for(self, plan: Plan) -> Mapping[str, MeterTotals]:
        return self.usage_by_plan.get(plan.ref, self.usage)


# ---------------------------------------------------------------------------- results

@dataclass(frozen=True)
class Throttle:
    charge: str
    policy: str
    units: Decimal
    included: Decimal
    beyond: Decimal

    def to_json(self) -> dict:
        return {"charge": self.charge, "policy": self.policy, "units": dec_str(self.units),
                "included": dec_str(self.included), "beyond": dec_str(self.beyond)}


@dataclass(slots=True)
class CustomerResult:
    customer: str
    segment: str
    plan: str  # plan ref (id@vN)
    revenue: Decimal
    cost: Decimal
    seats: int
    fees: Decimal  # recurring-fee lines (flat + per seat)
    throttled: tuple[Throttle, ...] = ()
    actual: Decimal | None = None
    actual_cost: Decimal | None = None
    actual_plan: str | None = None
    baseline_cost: Decimal | None = None
    interactions: int = 0
    invoice: RatedInvoice | None = None
    gate: GateCounts | None = None  # what the plan's quota did (quota replay)

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost

    @property
    def margin_pct(self) -> Decimal | None:
        return margin_pct(self.revenue, self.cost)

    def to_json(self) -> dict:
        return {"customer": self.customer, "segment": self.segment, "plan": self.plan,
                "revenue": str(self.revenue), "cost": dec_str(self.cost), "margin": dec_str(self.margin),
                "margin_pct": _pct_json(self.margin_pct), "seats": self.seats,
                "actual": None if self.actual is None else str(self.actual),
                "actual_plan": self.actual_plan,
                "baseline_cost": None if self.baseline_cost is None else dec_str(self.baseline_cost),
                "interactions": self.interactions,
                "throttled": [t.to_json() for t in self.throttled]}


@dataclass(frozen=True)
class Aggregate:
    """Totals over a group of customer results (a plan, or one segment under a plan)."""

    customers: int
    revenue: Decimal
    cost: Decimal
    fees: Decimal
    seats: int
    baseline_cost: Decimal | None = None
    actual: Decimal | None = None  # what these customers were actually billed (history)

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost

    @property
    def margin_pct(self) -> Decimal | None:
        return margin_pct(self.revenue, self.cost)

    def break_even_seat_price(self, target_margin: Decimal = ZERO) -> Decimal | None:
        """See module docstring; None without seats or for a target margin >= 100%."""
        if self.seats == 0 or target_margin >= 1:
            return None
        with localcontext() as ctx:
            ctx.prec = 40
            needed = self.cost / (ONE - target_margin)
            return (needed - (self.revenue - self.fees)) / self.seats

    @classmethod
    def of(cls, results: Sequence[CustomerResult]) -> "Aggregate":
        base = [r.baseline_cost for r in results if r.baseline_cost is not None]
        billed = [r.actual for r in results if r.actual is not None]
        return cls(len(results), sum((r.revenue for r in results), ZERO), sum((r.cost for r in results), ZERO),
                   sum((r.fees for r in results), ZERO), sum(r.seats for r in results),
                   sum(base, ZERO) if base and len(base) == len(results) else None,
                   sum(billed, ZERO) if billed else None)

    def to_json(self, currency: str = "USD") -> dict:
        be = self.break_even_seat_price()
        return {"customers": self.customers, "revenue": str(self.revenue),
                "cost": str(round_line(self.cost, currency)), "cost_exact": dec_str(self.cost),
                "margin": str(round_line(self.margin, currency)), "margin_pct": _pct_json(self.margin_pct),
                "seats": self.seats, "recurring_fees": str(self.fees),
                "break_even_price_per_seat": None if be is None else str(round_line(be, currency)),
                "baseline_cost": None if self.baseline_cost is None else dec_str(self.baseline_cost),
                "actual": None if self.actual is None else str(self.actual)}


@dataclass
class Simulation:
    period: Period
    plans: list[Plan]
    results: dict[str, list[CustomerResult]]  # plan ref -> per customer, input order
    levers: Levers = field(default_factory=Levers)
    source: str = "synthetic"

    # -- per plan ---------------------------------------------------------------------
    def plan(self, ref: str) -> Plan:
        return next(p for p in self.plans if p.ref == ref)

    def total(self, ref: str) -> Aggregate:
        return Aggregate.of(self.results[ref])

    def segments(self, ref: str) -> dict[str, Aggregate]:
        return self.groups(ref, "segment")

    def groups(self, ref: str, attribute: str) -> dict[str, Aggregate]:
        """Totals per value of a result attribute (``segment``, ``actual_plan``), in first-seen order."""
        groups: dict[str, list[CustomerResult]] = {}
        for r in self.results[ref]:
            groups.setdefault(getattr(r, attribute) or "(none)", []).append(r)
        return {name: Aggregate.of(rs) for name, rs in groups.items()}

    def margin_distribution(self, ref: str, edges: Sequence[Decimal] = MARGIN_EDGES) -> list[Bin]:
        """Histogram of customer margin % (customers with no revenue and some cost count as
        below every edge; with neither, they are left out)."""
        values = []
        for r in self.results[ref]:
            pct = r.margin_pct
            if pct is None:
                if r.cost > 0:
                    values.append(Decimal("-1e9"))
                continue
            values.append(pct)
        return histogram(values, edges)

    def margin_percentiles(self, ref: str) -> dict[str, Decimal | None]:
        return percentiles([r.margin for r in self.results[ref]])

    def quota(self, ref: str) -> GateCounts | None:
        """What the plan's quota did to every customer's interactions (quota replay only)."""
        gates = [r.gate for r in self.results[ref] if r.gate is not None]
        if not gates:
            return None
        total = GateCounts()
        for g in gates:
            total.add(g)
        return total

    def throttled(self, ref: str) -> list[CustomerResult]:
        return [r for r in self.results[ref] if r.throttled]

    def movers(self, ref: str, n: int = 10) -> list[tuple[CustomerResult, Decimal, Decimal]]:
        """(result, reference bill, change) for the ``n`` largest absolute changes."""
        baseline = {r.customer: r.revenue for r in self.results[self.plans[0].ref]}
        rows = []
        for r in self.results[ref]:
            reference = r.actual if r.actual is not None else baseline.get(r.customer)
            if reference is None:
                continue
            rows.append((r, reference, r.revenue - reference))
        rows.sort(key=lambda x: (-abs(x[2]), x[0].customer))
        return rows[:n]

    @property
    def has_actual(self) -> bool:
        return any(r.actual is not None for rs in self.results.values() for r in rs)

    def actual_totals(self) -> tuple[Decimal, Decimal] | None:
        """(billed, provider cost) of what actually happened, for customers with a bill."""
        first = self.results[self.plans[0].ref]
        rows = [r for r in first if r.actual is not None]
        if not rows:
            return None
        return (sum((r.actual for r in rows), ZERO),
                sum((r.actual_cost if r.actual_cost is not None else r.cost for r in rows), ZERO))

    def to_json(self, top: int = 10) -> dict:
        plans = []
        for plan in self.plans:
            ref = plan.ref
            total = self.total(ref)
            plans.append({
                "plan": {"id": plan.plan, "version": plan.version, "name": plan.name, "ref": ref},
                "currency": plan.currency,
                "total": total.to_json(plan.currency),
                "segments": {k: v.to_json(plan.currency) for k, v in self.segments(ref).items()},
                "by_actual_plan": {k: v.to_json(plan.currency) for k, v in self.groups(ref, "actual_plan").items()}
                if self.has_actual else {},
                "margin_distribution": [{"low": _opt(b.low), "high": _opt(b.high), "customers": b.count}
                                        for b in self.margin_distribution(ref)],
                "margin_percentiles": {k: None if v is None else dec_str(round_line(v, plan.currency))
                                       for k, v in self.margin_percentiles(ref).items()},
                "quota": None if self.quota(ref) is None else self.quota(ref).to_json(),
                "throttled": [{"customer": r.customer, "segment": r.segment,
                               "charges": [t.to_json() for t in r.throttled]} for r in self.throttled(ref)],
                "movers": [{"customer": r.customer, "segment": r.segment, "reference": str(refbill),
                            "simulated": str(r.revenue), "change": str(delta)}
                           for r, refbill, delta in self.movers(ref, top)],
                "customers": [r.to_json() for r in self.results[ref]],
            })
        actual = self.actual_totals()
        return {"source": self.source, "period": {"start": _iso(self.period.start), "end": _iso(self.period.end),
                                                  "label": self.period.label},
                "levers": self.levers.model_dump(mode="json", exclude_defaults=True),
                "actual": None if actual is None else {"billed": str(actual[0]), "cost": dec_str(actual[1]),
                                                       "margin_pct": _pct_json(margin_pct(*actual))},
                "plans": plans}


def _pct_json(value: Decimal | None) -> str | None:
    rounded = round_pct(value)
    return None if rounded is None else str(rounded)


def _opt(value: Decimal | None) -> str | None:
    return None if value is None else dec_str(value)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------- costing

class Coster:
    """Cost events with a book, optionally at a fixed date; cached per call shape.
    ``keep_unpriced``: an event the book cannot price costs 0 (as the ledger keeps it)
    instead of raising ``UnknownModel``."""

    def __init__(self, book: CostBook, at: date | None = None, keep_unpriced: bool = False):
        self.book = book
        self.at = datetime(at.year, at.month, at.day, tzinfo=UTC) if at else None
        self.keep_unpriced = keep_unpriced
        self._cache: dict[tuple, Decimal] = {}

    def __call__(self, event: UsageEvent) -> Decimal:
        p = event.properties
        when = self.at or event.timestamp
        key = (p.get("model"), when.date(), p.get("batch"), p.get("cost"), p.get("input_tokens"),
               p.get("output_tokens"), p.get("cache_read_tokens"), p.get("cache_write_tokens"),
               p.get("reasoning_tokens"))
        cost = self._cache.get(key)
        if cost is None:
            target = event if self.at is None else SimEvent(event.id, event.customer, event.type, self.at, p)
            try:
                cost = event_cost(target, self.book)
            except UnknownModel:
                if not self.keep_unpriced:
                    raise
                cost = ZERO
            self._cache[key] = cost
        return cost


def book_for(book: CostBook, levers: Levers) -> CostBook:
    return book.scaled(levers.cost_scale) if levers.cost_scale != 1 else book


# --------------------------------------------------------------------------- simulate

def throttles(plan: Plan, invoice: RatedInvoice) -> tuple[Throttle, ...]:
    out = []
    for usage in invoice.usage:
        policy = plan.charge(usage.charge).on_exhaustion
        name = _THROTTLING.get(type(policy))
        if name and usage.billable > 0:
            out.append(Throttle(usage.charge, name, usage.units, usage.included, usage.billable))
    return tuple(out)


def rate_totals(plans: Sequence[Plan], customers: Sequence[CustomerTotals], period: Period, *,
                levers: Levers | None = None, source: str = "synthetic", keep_invoices: bool = False,
                progress: Callable[[int], None] | None = None) -> Simulation:
    """Rate every customer under every plan (the fast path: no events).

    Customers on the simulation's own period with constant seats and no prepaid grants are
    rated by ``FastRater`` (same totals as ``rate_period``, see ``fastrate.py``); the others,
    and every customer when ``keep_invoices`` is set, by ``rate_period`` itself."""
    results: dict[str, list[CustomerResult]] = {p.ref: [] for p in plans}
    fast_ok = [not keep_invoices and fast_path_applies(period, c.period, c.seat_changes, c.grants, c.active_from,
                                                       c.active_until, c.trial_end) for c in customers]
    for plan in plans:
        ref = plan.ref
        out = results[ref]
        append = out.append
        rate = FastRater(plan, period).rate
        throttling = {c.key: _THROTTLING.get(type(c.on_exhaustion)) for c in plan.charges}
        for c, fast in zip(customers, fast_ok):
            if fast:
                r = rate(c.usage_by_plan.get(ref, c.usage) if c.usage_by_plan else c.usage, c.seats,
                         throttled_only=True)
                throttled = tuple(Throttle(u.charge, throttling[u.charge], u.units, u.included, u.billable)
                                  for u in r.usage) if r.usage else ()
                append(CustomerResult(c.customer, c.segment, ref, r.total, c.cost_by_plan.get(ref, c.cost), c.seats,
                                      r.fees, throttled, c.actual, c.actual_cost, c.actual_plan,
                                      c.baseline_cost, c.interactions, None, c.gate_by_plan.get(ref)))
                continue
            p = c.period or period
            changes = list(c.seat_changes) or [(p.start, c.seats)]
            invoice = rate_period(RatingInput(plan, c.customer, p, c.usage_for(plan), seat_changes=changes,
                                              grants=c.grants, active_from=c.active_from,
                                              active_until=c.active_until, trial_end=c.trial_end,
                                              provider_cost=c.cost))
            fees = sum((ln.amount for ln in invoice.lines if ln.kind == LineKind.FEE), ZERO)
            seats = max(n for _, n in changes) if c.seat_changes else c.seats
            out.append(CustomerResult(c.customer, c.segment, plan.ref, invoice.total, c.cost_by_plan.get(ref, c.cost),
                                      seats, fees, throttles(plan, invoice), c.actual, c.actual_cost, c.actual_plan,
                                      c.baseline_cost, c.interactions, invoice if keep_invoices else None,
                                      c.gate_by_plan.get(ref)))
        if progress:
            progress(len(customers))
    return Simulation(period, list(plans), results, levers or Levers(), source)


def customer_totals(plans: Sequence[Plan], customer: CustomerInput, period: Period, coster: Coster,
                    levers: Levers, baseline_coster: Coster | None = None,
                    interaction_type: str = "llm.call") -> CustomerTotals:
    """Apply the levers to one customer's events, cost them and aggregate every plan's meters."""
    p = customer.period or period
    original = dedupe(customer.events)
    events = apply_levers(original, levers) if levers.changes_events else original
    costs = {e.id: coster(e) for e in events}
    cost_of = lambda e: costs.get(e.id, ZERO)  # noqa: E731
    in_period = [e for e in events if p.start <= e.timestamp < p.end]
    total = sum((costs[e.id] for e in in_period), ZERO)
    baseline = None
    if baseline_coster is not None:  # history: the cost stored at ingestion is the cost before the levers
        baseline = customer.actual_cost if customer.actual_cost is not None else sum(
            (baseline_coster(e) for e in original if p.start <= e.timestamp < p.end), ZERO)
    usage_by_plan, cost_by_plan, gate_by_plan = {}, {}, {}
    for plan in plans:
        if levers.enforce_quota:  # what this plan's quota would have let through (gate.py)
            seen, gate_by_plan[plan.ref] = gate_events(plan, events, p, coster, customer.seats)
            cost_by_plan[plan.ref] = sum((coster(e) for e in seen if p.start <= e.timestamp < p.end), ZERO)
            usage_by_plan[plan.ref] = aggregate(plan, seen, p.start, p.end, coster)
        else:
            usage_by_plan[plan.ref] = aggregate(plan, events, p.start, p.end, cost_of)
    return CustomerTotals(customer.customer, {}, total, customer.segment, customer.seats, customer.seat_changes,
                          customer.period, customer.actual, customer.actual_cost, customer.actual_plan,
                          customer.grants, usage_by_plan, baseline,
                          sum(1 for e in in_period if e.type == interaction_type),
                          customer.active_from, customer.active_until, customer.trial_end, cost_by_plan, gate_by_plan)


def simulate(plans: Sequence[Plan], customers: Sequence[CustomerInput], period: Period, book: CostBook, *,
             levers: Levers | None = None, source: str = "synthetic", keep_invoices: bool = False,
             progress: Callable[[int], None] | None = None, keep_unpriced: bool = False) -> Simulation:
    """Re-rate each customer's events under each plan, after the what-if levers
    (``keep_unpriced``: see ``Coster``)."""
    levers = levers or Levers()
    coster = Coster(book_for(book, levers), levers.cost_date, keep_unpriced)
    baseline_coster = Coster(book, None, keep_unpriced) if not levers.is_identity else None
    totals = []
    for c in customers:
        totals.append(customer_totals(plans, c, period, coster, levers, baseline_coster))
        if progress:
            progress(1)
    return rate_totals(plans, totals, period, levers=levers, source=source, keep_invoices=keep_invoices)
