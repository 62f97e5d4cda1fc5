"""Margin reports over one period: revenue, provider cost and gross margin per customer,
breakdowns by any event property, whales, usage segments and chargebacks.

Definitions (``period`` is a calendar month ``YYYY-MM`` taken in each customer's time zone):

- **revenue** of a customer: ``invoiced`` when finalized/paid invoices (and credit notes)
  exist whose service period starts in the period (their totals summed); otherwise
  ``rated``: the period rated to date (``as_of``) through the rating engine on the ledger's
  meter totals (``aggregate_meters``) -- for an open period that is revenue *so far*
  (recurring fees in advance count in full); ``none`` without a subscription.
- **cost**: the sum of the stored provider cost (``cost_pico``) of the customer's events in
  the period (up to ``as_of``).
- **margin** = revenue - cost; **margin %** = margin / revenue x 100 (None without revenue).
- **breakdown by a property** (feature, model, user, task, or any event property): the cost
  of the events carrying each value, and the customer's revenue *allocated* to each value in
  proportion to its share of the customer's events (``allocate="events"``, default) or of its
  cost (``allocate="cost"``; evenly when there is nothing to weigh). Events without the
  property, and revenue of customers with no events, count under ``(none)``. Summed over
  customers this is the chargeback total per value.
- **whales**: customers whose cost exceeds their revenue, or whose margin % is below
  ``whale_margin_pct`` when given.
- **segments**: nearest-rank P25/P50/P90/P99 across customers of interactions (events of type
  ``llm.call``), cost, revenue and margin.

Read-only: one read transaction, rolled back.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine

from billing.catalog import Catalog
from billing.ledger.aggregate_sql import aggregate_meters, max_event_id
from billing.ledger.types import to_us
from billing.money import dec_str, from_minor, round_line
from billing.rating.engine import RatingInput, rate_period
from billing.rating.periods import Period, parse_period_label
from billing.rating.types import CreditGrant, RatedInvoice
from billing.reports import repository as repo
from billing.reports.stats import margin_pct, percentiles, round_pct

ZERO = Decimal(0)
PICO = Decimal(10) ** 12
MICRO = Decimal(10) ** 6
NONE_KEY = "(none)"


@dataclass
class CustomerMargin:
    customer: str
    plan: str | None
    revenue: Decimal
    source: str  # invoiced | rated | none
    cost: Decimal
    events: int
    interactions: int
    currency: str = "USD"
    period: Period | None = None

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost

    @property
    def margin_pct(self) -> Decimal | None:
        return margin_pct(self.revenue, self.cost)

    def to_json(self) -> dict:
        return {"customer": self.customer, "plan": self.plan, "revenue": str(self.revenue), "source": self.source,
                "cost": dec_str(self.cost), "margin": dec_str(self.margin),
                "margin_pct": _pct(self.margin_pct), "events": self.events, "interactions": self.interactions,
                "currency": self.currency}


@dataclass
class BreakdownRow:
    key: str
    customers: int
    events: int
    cost: Decimal
    revenue: Decimal  # allocated

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost

    @property
    def margin_pct(self) -> Decimal | None:
        return margin_pct(self.revenue, self.cost)

    def to_json(self) -> dict:
        return {"key": self.key, "customers": self.customers, "events": self.events, "cost": dec_str(self.cost),
                "revenue": dec_str(_cents(self.revenue)), "margin": dec_str(_cents(self.margin)),
                "margin_pct": _pct(self.margin_pct)}


@dataclass
class MarginReport:
    label: str
    as_of: datetime
    customers: list[CustomerMargin]
    by: str | None = None
    allocate: str = "events"
    breakdown: list[BreakdownRow] = field(default_factory=list)
    per_customer_breakdown: list[tuple[str, BreakdownRow]] = field(default_factory=list)
    whale_margin_pct: Decimal | None = None

    @property
    def revenue(self) -> Decimal:
        return sum((c.revenue for c in self.customers), ZERO)

    @property
    def cost(self) -> Decimal:
        return sum((c.cost for c in self.customers), ZERO)

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost

    @property
    def margin_pct(self) -> Decimal | None:
        return margin_pct(self.revenue, self.cost)

    def whales(self) -> list[CustomerMargin]:
        out = []
        for c in self.customers:
            pct = c.margin_pct
            if c.cost > c.revenue or (self.whale_margin_pct is not None and pct is not None
                                      and pct < self.whale_margin_pct):
                out.append(c)
        return sorted(out, key=lambda c: (c.margin, c.customer))

    def segments(self) -> dict[str, dict[str, Decimal | None]]:
        cs = self.customers
        return {"interactions": percentiles([Decimal(c.interactions) for c in cs]),
                "cost": percentiles([c.cost for c in cs]),
                "revenue": percentiles([c.revenue for c in cs]),
                "margin": percentiles([c.margin for c in cs])}

    def to_json(self) -> dict:
        return {
            "period": self.label, "as_of": self.as_of.isoformat().replace("+00:00", "Z"),
            "totals": {"customers": len(self.customers), "revenue": dec_str(self.revenue),
                       "cost": dec_str(self.cost), "margin": dec_str(self.margin), "margin_pct": _pct(self.margin_pct)},
            "customers": [c.to_json() for c in self.customers],
            "whales": [c.customer for c in self.whales()],
            "segments": {metric: {k: None if v is None else dec_str(v) for k, v in ps.items()}
                         for metric, ps in self.segments().items()},
            "by": self.by, "allocate": self.allocate,
            "breakdown": [r.to_json() for r in self.breakdown],
            "per_customer_breakdown": [{"customer": c, **r.to_json()} for c, r in self.per_customer_breakdown],
        }

    def to_csv(self) -> str:
        """Per customer rows; with ``by``, then the breakdown rows (a ``section`` column tells them apart)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["section", "customer", "key", "plan", "source", "events", "interactions", "revenue", "cost",
                    "margin", "margin_pct"])
        for c in self.customers:
            w.writerow(["customer", c.customer, "", c.plan or "", c.source, c.events, c.interactions, str(c.revenue),
                        dec_str(c.cost), dec_str(c.margin), _pct(c.margin_pct) or ""])
        for r in self.breakdown:
            w.writerow([f"by:{self.by}", "", r.key, "", self.allocate, r.events, "", dec_str(_cents(r.revenue)),
                        dec_str(r.cost), dec_str(_cents(r.margin)), _pct(r.margin_pct) or ""])
        for customer, r in self.per_customer_breakdown:
            w.writerow([f"customer-by:{self.by}", customer, r.key, "", self.allocate, r.events, "",
                        dec_str(_cents(r.revenue)), dec_str(r.cost), dec_str(_cents(r.margin)), _pct(r.margin_pct) or ""])
        return buf.getvalue()


def _pct(value: Decimal | None) -> str | None:
    r = round_pct(value)
    return None if r is None else str(r)


def _cents(value: Decimal) -> Decimal:
    return round_line(value, "USD")


# ---------------------------------------------------------------------------- building

@dataclass
class _Sub:
    customer: str
    plan_ref: str
    sub: object
    period: Period


def _periods(zones: dict[str, tuple[str, str]], label: str) -> dict[str, Period]:
    cache: dict[str, Period] = {}
    out = {}
    for customer, (tz, _) in zones.items():
        if tz not in cache:
            cache[tz] = parse_period_label(label, tz)
        out[customer] = cache[tz]
    return out


def rate_to_date(conn, catalog: Catalog, subs: list, periods: dict[str, Period], as_of: datetime,
                 watermark: int, scale: dict[str, Decimal] | None = None) -> dict[str, tuple[object, RatedInvoice]]:
    """customer -> (subscription, invoice rated on the events up to ``as_of``) for the
    latest subscription of each customer overlapping its period. With ``scale`` (customer ->
    factor), count/sum meter totals and costs are multiplied by it first (forecasts)."""
    latest = {}
    for s in subs:
        p = periods.get(s.customer_id)
        if p is not None and s.started_at < p.end and (s.ended_at is None or s.ended_at > p.start):
            latest[s.customer_id] = s
    if not latest:
        return {}
    seats = repo.seat_histories(conn, [s.id for s in latest.values()])
    grants = repo.grant_balances(conn, list(latest))
    groups: dict[tuple, list] = defaultdict(list)
    for customer, s in latest.items():
        groups[(s.plan_id, s.plan_version, periods[customer])].append(s)
    out = {}
    for (plan_id, version, p), members in groups.items():
        plan = catalog.get(plan_id, version)
        end = min(p.end, as_of)
        ids = [s.customer_id for s in members]
        totals = aggregate_meters(conn, plan, ids, to_us(p.start), to_us(end), watermark) if end > p.start else {}
        costs = repo.cost_by(conn, to_us(p.start), to_us(end), customers=ids) if end > p.start else []
        cost_of = {r.customer: Decimal(r.cost_pico) / PICO for r in costs}
        for s in members:
            usage = totals.get(s.customer_id, {})
            cost = cost_of.get(s.customer_id, ZERO)
            k = (scale or {}).get(s.customer_id)
            if k is not None:
                usage = {key: _scaled(plan, key, t, k) for key, t in usage.items()}
                cost = cost * k
            g = [CreditGrant(g.id, Decimal(left) / MICRO, g.name, g.expires_at, g.effective_at,
                             tuple(g.applies_to.split(",")) if g.applies_to else None)
                 for g, left in grants.get(s.customer_id, []) if left > 0]
            inv = rate_period(RatingInput(plan, s.customer_id, p, usage, seat_changes=seats.get(s.id, []),
                                          grants=g, active_from=s.started_at if s.started_at > p.start else None,
                                          active_until=s.ended_at if s.ended_at and s.ended_at < p.end else None,
                                          trial_end=s.trial_end, provider_cost=cost))
            out[s.customer_id] = (s, inv)
    return out


def _scaled(plan, key: str, totals, k: Decimal):
    from billing.rating.types import MeterTotals

    try:
        aggregation = plan.meter(key).aggregation
    except KeyError:
        aggregation = "count"
    if aggregation in ("max", "unique_count"):
        return MeterTotals(totals.units, totals.events, totals.cost * k, totals.transactions)
    return MeterTotals(totals.units * k, int((totals.events * k).to_integral_value()), totals.cost * k,
                       totals.transactions)


def margin_report(engine: Engine, catalog: Catalog, label: str, *, as_of: datetime | None = None,
                  by: str | None = None, allocate: str = "events", whale_margin_pct: Decimal | None = None,
                  interaction_type: str = "llm.call") -> MarginReport:
    if allocate not in ("events", "cost"):
        raise ValueError("allocate must be 'events' or 'cost'")
    as_of = as_of or datetime.now(UTC)
    utc = parse_period_label(label)
    window_start = utc.start
    with engine.connect() as conn:
        try:
            zones = repo.customers(conn)
            periods = _periods(zones, label)
            lo = min((p.start for p in periods.values()), default=window_start)
            hi = max((p.end for p in periods.values()), default=utc.end)
            subs = repo.subscriptions_overlapping(conn, lo, hi)
            invoices = repo.invoices_starting_between(conn, lo, hi)
            invoiced: dict[str, Decimal] = defaultdict(lambda: ZERO)
            inv_plan: dict[str, str] = {}
            for inv in invoices:
                p = periods.get(inv.customer)
                if p is not None and p.start <= inv.period_start < p.end:
                    invoiced[inv.customer] += from_minor(inv.total_minor, inv.currency)
                    if inv.kind == "invoice":
                        inv_plan[inv.customer] = f"{inv.plan_id}@v{inv.plan_version}"
            # cost and counts per customer (and per property value), one query per time zone
            by_zone: dict[Period, list[str]] = defaultdict(list)
            for customer, p in periods.items():
                by_zone[p].append(customer)
            rows: list[repo.CostRow] = []
            for p, members in by_zone.items():
                end = min(p.end, as_of)
                if end <= p.start:
                    continue
                only = members if len(by_zone) > 1 else None
                rows.extend(repo.cost_by(conn, to_us(p.start), to_us(end), by, customers=only,
                                         interaction_type=interaction_type))
            needs_rating = [s for s in subs if s.customer_id not in invoiced]
            rated = rate_to_date(conn, catalog, needs_rating, periods, as_of, max_event_id(conn)) if needs_rating else {}
        finally:
            conn.rollback()

    cost: dict[str, int] = defaultdict(int)
    events: dict[str, int] = defaultdict(int)
    inter: dict[str, int] = defaultdict(int)
    for r in rows:
        cost[r.customer] += r.cost_pico
        events[r.customer] += r.events
        inter[r.customer] += r.interactions
    sub_plan = {s.customer_id: f"{s.plan_id}@v{s.plan_version}" for s in subs}
    customers = []
    for customer in sorted(set(cost) | set(invoiced) | set(sub_plan)):
        if customer in invoiced:
            revenue, source, plan = invoiced[customer], "invoiced", inv_plan.get(customer, sub_plan.get(customer))
        elif customer in rated:
            revenue, source, plan = rated[customer][1].total, "rated", sub_plan.get(customer)
        else:
            revenue, source, plan = ZERO, "none", sub_plan.get(customer)
        customers.append(CustomerMargin(customer, plan, revenue, source, Decimal(cost[customer]) / PICO,
                                        events[customer], inter[customer], zones.get(customer, ("UTC", "USD"))[1],
                                        periods.get(customer)))
    report = MarginReport(label, as_of, customers, by, allocate, whale_margin_pct=whale_margin_pct)
    if by:
        _breakdown(report, rows)
    return report


def _breakdown(report: MarginReport, rows: list) -> None:
    revenue = {c.customer: c.revenue for c in report.customers}
    per_customer: dict[str, list] = defaultdict(list)
    for r in rows:
        per_customer[r.customer].append(r)
    for customer, amount in revenue.items():  # revenue without usage (fees only) counts under (none)
        if amount and customer not in per_customer:
            per_customer[customer].append(repo.CostRow(customer, None, 0, 0, 0))
    totals: dict[str, BreakdownRow] = {}
    detail = []
    for customer in sorted(per_customer):
        mine = per_customer[customer]
        weight_total = sum((r.events if report.allocate == "events" else r.cost_pico) for r in mine)
        for r in sorted(mine, key=lambda x: (x.key is None, x.key or "")):
            key = NONE_KEY if r.key is None else r.key
            weight = r.events if report.allocate == "events" else r.cost_pico
            if weight_total:
                share = Decimal(weight) / Decimal(weight_total)
            else:  # nothing to weigh by (no cost, say): split evenly
                share = Decimal(1) / len(mine)
            row = BreakdownRow(key, 1, r.events, Decimal(r.cost_pico) / PICO, revenue.get(customer, ZERO) * share)
            detail.append((customer, row))
            agg = totals.setdefault(key, BreakdownRow(key, 0, 0, ZERO, ZERO))
            agg.customers += 1
            agg.events += row.events
            agg.cost += row.cost
            agg.revenue += row.revenue
    report.breakdown = sorted(totals.values(), key=lambda r: (-r.cost, r.key))
    report.per_customer_breakdown = detail


__all__ = ["BreakdownRow", "CustomerMargin", "MarginReport", "margin_report", "rate_to_date"]
