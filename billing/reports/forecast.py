"""End-of-period forecasts from the run rate, per customer, flagged where the projection
crosses an allowance, a spend cap or a budget.

Method (``METHOD``, printed with every forecast): for the subscription active at ``as_of``
and its window ``[w0, w1)`` in the customer's current period (the period cut to the
subscription's start / end), the *elapsed fraction* is ``f = (as_of - w0) / (w1 - w0)``
(exact, in microseconds). The projection multiplies what was used so far by ``1 / f``:

- ``count``, ``sum`` and ``time_weighted_sum`` meters, event counts and provider cost scale by ``1 / f``;
- ``max``, ``unique_count``, ``latest``, ``min`` and ``avg`` meters stay as observed (they do
  not accumulate linearly);
- the projected invoice is the rating engine's invoice on the projected totals, so included
  usage, credits, spend caps and commitments apply exactly as they will at close.

No projection is made before any time has elapsed (``f = 0``); early in a period the run
rate is noisy (one busy hour projects a busy month) -- ``elapsed`` is reported with it.

Crossings use the budget alerts' measures and names (``billing.rating.arithmetic.measures``,
as ``billing.quota.alerts`` fires them): units of a charge's included allowance
(``charge:<key>:included``), a charge's billed spend of its overage spend cap
(``charge:<key>:spend_cap``), the plan's usage spend of its spend cap (``spend_cap``) and of
``budget_alerts.budget`` (``budget``). Each is checked at the plan's alert thresholds
and at 100%; ``flags`` lists the subjects whose 100% the projection reaches, and for a
crossing not reached yet ``at`` is when the run rate reaches it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext

from sqlalchemy import Engine

from billing.catalog import Catalog
from billing.catalog.schema import Plan
from billing.invoicing.windows import scaled_totals, window_of
from billing.store.aggregate_sql import max_event_id
from billing.store.types import to_us
from billing.money import dec_str, round_line
from billing.rating import arithmetic
from billing.rating.periods import BillingCycle, Period
from billing.rating.types import MeterTotals
from billing.reports import repository as repo
from billing.reports.margins import customer_periods
from billing.reports.stats import margin_pct, round_pct
from billing.reports.to_date import rate_to_date, usage_read

ZERO = Decimal(0)
HUNDRED = Decimal(100)
METHOD = ("run rate: usage and cost so far / elapsed fraction of the billing window (count, sum and "
          "time-weighted sum meters; max, unique-count, latest, min and avg meters as observed), then rated by the plan (included usage, caps, credits)")


@dataclass(frozen=True)
class Crossing:
    subject: str  # charge:<key>:included | charge:<key>:spend_cap | spend_cap | budget
    threshold: Decimal  # percent of the limit
    limit: Decimal
    unit: str  # "units" or the currency
    now: Decimal
    projected: Decimal
    reached_now: bool
    at: datetime | None = None  # when the run rate reaches it (None: reached already)

    def to_json(self) -> dict:
        return {"subject": self.subject, "threshold_percent": dec_str(self.threshold), "limit": dec_str(self.limit),
                "unit": self.unit, "now": dec_str(self.now), "projected": dec_str(self.projected.quantize(Decimal("0.01"))),
                "reached_now": self.reached_now, "at": None if self.at is None else _iso(self.at)}


@dataclass
class ForecastRow:
    customer: str
    plan: str
    period: Period
    elapsed: Decimal  # fraction of the active window elapsed at as_of
    usage_to_date: dict[str, Decimal]
    cost_to_date: Decimal
    invoice_to_date: Decimal
    projected_usage: dict[str, Decimal]
    projected_cost: Decimal
    projected_invoice: Decimal
    currency: str = "USD"
    crossings: list[Crossing] = field(default_factory=list)

    @property
    def flags(self) -> list[str]:
        return [c.subject for c in self.crossings if c.threshold == HUNDRED]

    @property
    def projected_margin(self) -> Decimal:
        return self.projected_invoice - self.projected_cost

    @property
    def projected_margin_pct(self) -> Decimal | None:
        return margin_pct(self.projected_invoice, self.projected_cost)

    def to_json(self) -> dict:
        c = self.currency
        pct = round_pct(self.projected_margin_pct)
        return {"customer": self.customer, "plan": self.plan, "period": self.period.label,
                "elapsed": dec_str(self.elapsed.quantize(Decimal("0.000001"))),
                "usage_to_date": {k: dec_str(v) for k, v in self.usage_to_date.items()},
                "cost_to_date": dec_str(self.cost_to_date), "invoice_to_date": str(self.invoice_to_date),
                "projected_usage": {k: dec_str(v.quantize(Decimal("0.01"))) for k, v in self.projected_usage.items()},
                "projected_cost": str(round_line(self.projected_cost, c)),
                "projected_invoice": str(self.projected_invoice),
                "projected_margin": str(round_line(self.projected_margin, c)),
                "projected_margin_pct": None if pct is None else str(pct),
                "flags": self.flags, "crossings": [x.to_json() for x in self.crossings]}


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def elapsed_fraction(as_of: datetime, start: datetime, end: datetime) -> Decimal:
    """(as_of - start) / (end - start), clipped to [0, 1], exact at 40 digits."""
    if as_of <= start:
        return ZERO
    if as_of >= end:
        return Decimal(1)
    with localcontext() as ctx:
        ctx.prec = 40
        return Decimal(to_us(as_of) - to_us(start)) / Decimal(to_us(end) - to_us(start))


def run_rate_factor(as_of: datetime, start: datetime, end: datetime) -> Decimal:
    """1 / elapsed fraction, as (end - start) / (as_of - start) in exact microseconds."""
    with localcontext() as ctx:
        ctx.prec = 40
        return Decimal(to_us(end) - to_us(start)) / Decimal(to_us(min(as_of, end)) - to_us(start))


# ------------------------------------------------------------------------------ crossings

def measures(plan: Plan, usage: dict[str, MeterTotals], seats: int) -> list[tuple[str, Decimal, Decimal, str]]:
    """(subject, value, limit, unit) of ``billing.rating.arithmetic.measures``: the budget
    alerts' measures, under their names."""
    return [(m.subject, m.value, m.limit, m.unit) for m in arithmetic.measures(plan.compiled, usage, seats)]


def crossings(plan: Plan, usage: dict[str, MeterTotals], seats: int, factor: Decimal, w0: datetime,
              as_of: datetime) -> list[Crossing]:
    """Thresholds (the plan's alert thresholds and 100%) the projection reaches."""
    spec = plan.budget_alerts
    thresholds = sorted(set(spec.thresholds_percent if spec else ()) | {HUNDRED})
    now = {s: v for s, v, _, _ in measures(plan, usage, seats)}
    projected = [(s, v, lim, unit) for s, v, lim, unit in measures(plan, _scale(plan, usage, factor), seats)]
    out = []
    for subject, value, limit, unit in projected:
        for t in thresholds:
            if value * HUNDRED < limit * t:
                continue
            reached = now[subject] * HUNDRED >= limit * t
            at = None if reached else _when(plan, usage, seats, subject, limit * t / HUNDRED, factor, w0, as_of)
            out.append(Crossing(subject, t, limit, unit, now[subject], value, reached, at))
    return out


def _scale(plan: Plan, usage: dict[str, MeterTotals], k: Decimal) -> dict[str, MeterTotals]:
    return {key: scaled_totals(plan, key, t, k) for key, t in usage.items()}


def _when(plan, usage, seats, subject, target, factor, w0, as_of) -> datetime:
    """The first instant at which the run rate reaches ``target`` (bisection on the scale
    factor between 1 (now) and ``factor`` (window end), to the nearest second)."""
    def value(k: Decimal) -> Decimal:
        return next(v for s, v, _, _ in measures(plan, _scale(plan, usage, k), seats) if s == subject)

    elapsed = as_of - w0
    lo, hi = Decimal(1), factor
    with localcontext() as ctx:
        ctx.prec = 40
        if subject.endswith(":included"):  # units grow linearly with the run rate: solve directly
            units = value(Decimal(1))
            if units > 0 and value(Decimal(2)) == 2 * units:
                hi = target / units
                lo = hi
        for _ in range(60):
            if lo == hi:
                break
            if (hi - lo) * Decimal(elapsed.total_seconds()) < Decimal("0.001"):
                break
            mid = (lo + hi) / 2
            if value(mid) >= target:
                hi = mid
            else:
                lo = mid
        seconds = (hi * Decimal(elapsed.total_seconds())).to_integral_value()
    return w0 + timedelta(seconds=int(seconds))


# -------------------------------------------------------------------------------- forecast

def forecast(engine: Engine, catalog: Catalog, as_of: datetime | None = None, *,
             rollups: bool = True, only: Callable[[str, datetime, datetime], bool] | None = None) -> list[ForecastRow]:
    """Every customer with a subscription active at ``as_of``: to date and projected to period
    end (``rollups`` False: usage from the events even where the hourly rollups are exact).
    ``only(customer, w0, w1)``: forecast just the customers it keeps, given their window."""
    as_of = as_of or datetime.now(UTC)
    label = f"{as_of.year:04d}-{as_of.month:02d}"
    with engine.connect() as conn:
        try:
            zones = repo.customers(conn)
            periods = customer_periods(zones, label)
            # a customer whose local month differs from the UTC one at as_of: use the period holding as_of
            for customer, p in list(periods.items()):
                if not p.contains(as_of):
                    periods[customer] = BillingCycle("month", "calendar", zones[customer][0]).period_containing(as_of)
            subs = repo.subscriptions_overlapping(conn, min(p.start for p in periods.values()) if periods else as_of,
                                                  max(p.end for p in periods.values()) if periods else as_of)
            active = {}
            for s in subs:  # oldest first: the latest active subscription wins
                if s.started_at <= as_of and (s.ended_at is None or s.ended_at > as_of):
                    active[s.customer_id] = s
            if only is not None:
                active = {c: s for c, s in active.items()
                          if (span := window_of(s, periods[c]) if c in periods else None) is not None
                          and only(c, span[0], span[1])}
            watermark = max_event_id(conn)
            current = {w.customer: w for w in rate_to_date(conn, catalog, list(active.values()), periods, as_of,
                                                           watermark, rollups=rollups)}
            scale = {c: run_rate_factor(as_of, w.start, w.end) for c, w in current.items() if as_of > w.start}
            # the same windows again, scaled: on the usage just read (not read twice)
            projected = {w.customer: w for w in rate_to_date(conn, catalog, [current[c].sub for c in scale], periods,
                                                             as_of, watermark, scale=scale, rollups=rollups,
                                                             known=usage_read(list(current.values())))}
        finally:
            conn.rollback()
    rows = []
    for customer in sorted(projected):
        w, proj = current[customer], projected[customer]
        inv, pinv = w.invoice, proj.invoice
        cross = crossings(w.plan, w.usage, w.max_seats, scale[customer], w.start, as_of)
        rows.append(ForecastRow(customer, w.plan.ref, w.period, elapsed_fraction(as_of, w.start, w.end),
                                {u.charge: u.units for u in inv.usage}, inv.provider_cost, inv.total,
                                {u.charge: u.units for u in pinv.usage}, pinv.provider_cost, pinv.total,
                                w.plan.currency, cross))
    return rows

