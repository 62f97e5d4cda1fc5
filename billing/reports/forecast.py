"""End-of-period forecasts from the run rate, per customer, flagged at spend caps and budgets.

Run rate: for a customer's current period ``[start, end)`` and its active window
``[w0, w1)`` (the period cut to the subscription's start / end), the *elapsed fraction* is
``f = (as_of - w0) / (w1 - w0)`` (exact, in microseconds). Projections divide what was used so
far by ``f``:

- ``count`` and ``sum`` meters, event counts and provider cost scale by ``1 / f``;
- ``max`` and ``unique_count`` meters stay as observed (they do not accumulate linearly);
- the projected invoice is the rating engine's invoice on the projected totals, so included
  usage, credits, spend caps and commitments apply exactly as they will at close.

No projection is made before any time has elapsed (``f = 0``); early in a period the run
rate is noisy (one busy hour projects a busy month) -- ``elapsed`` is reported with it.

Flags (``ForecastRow.flags``):

- ``spend_cap:<charge>`` -- the projected usage of a charge reaches its overage spend cap;
- ``spend_cap:plan`` -- projected usage charges reach the plan-wide spend cap;
- ``budget:<pct>`` -- the projected invoice total reaches that budget alert threshold
  (``budget_alerts.budget``, thresholds such as 50/80/100%); the highest one is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, localcontext

from sqlalchemy import Engine

from billing.catalog import Catalog
from billing.ledger.aggregate_sql import max_event_id
from billing.ledger.types import to_us
from billing.money import dec_str, round_line
from billing.rating.periods import BillingCycle, Period
from billing.reports import repository as repo
from billing.reports.margins import _periods, rate_to_date

ZERO = Decimal(0)


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
    flags: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        c = self.currency
        return {"customer": self.customer, "plan": self.plan, "period": self.period.label,
                "elapsed": dec_str(self.elapsed.quantize(Decimal("0.000001"))),
                "usage_to_date": {k: dec_str(v) for k, v in self.usage_to_date.items()},
                "cost_to_date": dec_str(self.cost_to_date), "invoice_to_date": str(self.invoice_to_date),
                "projected_usage": {k: dec_str(v.quantize(Decimal("0.01"))) for k, v in self.projected_usage.items()},
                "projected_cost": str(round_line(self.projected_cost, c)),
                "projected_invoice": str(self.projected_invoice), "flags": self.flags}


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


def flags_for(plan, invoice) -> list[str]:
    out = []
    for charge in plan.charges:
        cap = getattr(charge.on_exhaustion, "spend_cap", None)
        if cap is None:
            continue
        used = sum((ln.amount for ln in invoice.lines if ln.kind == "usage" and ln.key == charge.key), ZERO)
        if used >= round_line(cap, plan.currency) and cap > 0:
            out.append(f"spend_cap:{charge.key}")
    if plan.spend_cap is not None:
        usage = sum((ln.amount for ln in invoice.lines if ln.kind in ("usage", "cap") and ln.key != "spend_cap"), ZERO)
        if usage >= round_line(plan.spend_cap, plan.currency):
            out.append("spend_cap:plan")
    alerts = plan.budget_alerts
    if alerts is not None and alerts.budget:
        crossed = [t for t in alerts.thresholds_percent if invoice.total >= alerts.budget * t / 100]
        if crossed:
            out.append(f"budget:{dec_str(max(crossed))}%")
    return out


def forecast(engine: Engine, catalog: Catalog, as_of: datetime | None = None) -> list[ForecastRow]:
    """Every customer with a subscription active at ``as_of``: to date and projected to period end."""
    as_of = as_of or datetime.now(UTC)
    label = f"{as_of.year:04d}-{as_of.month:02d}"
    with engine.connect() as conn:
        try:
            zones = repo.customers(conn)
            periods = _periods(zones, label)
            # a customer whose local month differs from the UTC one at as_of: use the period holding as_of
            for customer, p in list(periods.items()):
                if not p.contains(as_of):
                    periods[customer] = BillingCycle("month", "calendar", zones[customer][0]).period_containing(as_of)
            subs = repo.subscriptions_overlapping(conn, min(p.start for p in periods.values()) if periods else as_of,
                                                  max(p.end for p in periods.values()) if periods else as_of)
            subs = [s for s in subs if s.started_at <= as_of and (s.ended_at is None or s.ended_at > as_of)]
            watermark = max_event_id(conn)
            current = rate_to_date(conn, catalog, subs, periods, as_of, watermark)
            scale = {}
            fractions = {}
            for customer, (s, _) in current.items():
                p = periods[customer]
                w0 = max(p.start, s.started_at)
                w1 = min(p.end, s.ended_at) if s.ended_at else p.end
                f = elapsed_fraction(as_of, w0, w1)
                fractions[customer] = f
                if f > 0:
                    scale[customer] = run_rate_factor(as_of, w0, w1)
            projected = rate_to_date(conn, catalog, [current[c][0] for c in scale], periods, as_of, watermark,
                                     scale=scale)
        finally:
            conn.rollback()
    rows = []
    for customer in sorted(current):
        s, inv = current[customer]
        if customer not in projected:
            continue
        plan = catalog.get(s.plan_id, s.plan_version)
        _, proj = projected[customer]
        usage = {u.charge: u.units for u in inv.usage}
        rows.append(ForecastRow(customer, plan.ref, periods[customer], fractions[customer], usage,
                                inv.provider_cost, inv.total, {u.charge: u.units for u in proj.usage},
                                proj.provider_cost, proj.total, plan.currency, flags_for(plan, proj)))
    return rows
