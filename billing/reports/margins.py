"""Margin reports over one period: revenue, provider cost and gross margin per customer,
breakdowns by any event property, whales, usage segments and chargebacks.

Definitions (``period`` is a calendar month ``YYYY-MM`` taken in each customer's time zone;
``as_of`` defaults to now):

- **revenue** of a customer, per subscription window in the period (see ``to_date.py``):
  *invoiced* -- the lines of invoices and credit notes finalized by ``as_of`` whose service
  window starts in the period: the period's invoice, plus the adjustments and credit notes
  later closes issued for it (so late events count in the month they happened); a document
  voided by ``as_of`` counts 0 (the period stays closed, it is not re-rated); advance fees
  invoiced when the window started and threshold invoices count once a document closed
  the window (until then they bill it only in part);
  otherwise *rated* -- the window rated to ``as_of`` by the rating engine on the ledger's
  meters (for an open period, revenue *so far*; recurring fees in advance count in full).
  ``source`` says which: ``invoiced``, ``rated``, ``invoiced+rated`` (a plan change: one part
  closed, one open) or ``none`` (no subscription).
- **cost**: the stored provider cost (``cost_pico``) of the customer's events in the period
  up to ``as_of``, exact.
- **unpriced usage**, apart: the events of the period the cost book could not price yet
  (cost 0 until a price arrives and re-costs them), by model, with their tokens; and the
  events of types no plan meters (their cost counts above), by type.
- **margin** = revenue - cost; **margin %** = margin / revenue x 100 (None without revenue).
- **breakdown by a property** (feature, model, user, task, or any event property -- the
  chargeback totals per team or workflow): the cost of the events carrying each value, and
  each customer's revenue *allocated* across the values its events carry, in proportion to
  the number of those events (``allocate="events"``, default) or to their cost
  (``allocate="cost"``), in whole cents that sum to the customer's revenue (largest
  remainder). ``(none)``: events without the property (their cost), and the revenue of
  customers none of whose events carry it.
- **whales**: customers whose cost exceeds their revenue, or whose margin % is below
  ``whale_margin_pct`` when given.
- **segments**: the P25 / P50 / P90 / P99 customers by usage (interactions: events of type
  ``llm.call``; ties by cost, then id; nearest rank), each with *its own* interactions, cost,
  revenue and margin -- "light user (P25): 30 interactions, $2.70 cost, $20.00 revenue, 87%
  margin". ``percentiles`` gives each metric's own percentiles across customers.

Amounts are in each customer's currency; totals assume one currency (``currencies`` lists
them). Read-only: one read transaction, rolled back. Exact for calendar-month billing
cycles; a plan on an anniversary or yearly cycle counts the invoices whose service period
starts in the month.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine, text

from billing.catalog import Catalog
from billing.store.aggregate_sql import max_event_id
from billing.store.flagged import FlaggedGroup, flagged_totals
from billing.store.types import to_us
from billing.money import from_minor, quantum
from billing.rating.periods import Period, parse_period_label
from billing.reports import repository as repo
from billing.reports.costs_beyond import outcome_types, splits
from billing.reports.split_repository import SplitRow, costs_and_split
from billing.reports.stats import PERCENTILES, allocate, margin_pct, percentile, percentiles
from billing.reports.to_date import rate_to_date

ZERO = Decimal(0)
EPOCH_DAY = date(1970, 1, 1)
PICO = Decimal(10) ** 12
NONE_KEY = "(none)"
SEGMENT_NAMES = {25: "light", 50: "median", 90: "heavy", 99: "power"}


@dataclass(frozen=True)
class TokenCounts:
    """Token counts of events (their ``input_tokens``, ``output_tokens``, ``cache_read_tokens``
    as *cached*, ``reasoning_tokens``)."""

    input: Decimal = ZERO
    output: Decimal = ZERO
    cached: Decimal = ZERO
    reasoning: Decimal = ZERO

    def __add__(self, other: "TokenCounts") -> "TokenCounts":
        return TokenCounts(self.input + other.input, self.output + other.output, self.cached + other.cached,
                           self.reasoning + other.reasoning)

    @classmethod
    def of(cls, values) -> "TokenCounts":
        return cls(*values)

    def to_json(self) -> dict[str, str]:
        from billing.money import dec_str

        return {"input": dec_str(self.input), "output": dec_str(self.output), "cached": dec_str(self.cached),
                "reasoning": dec_str(self.reasoning)}


NO_TOKENS = TokenCounts()


@dataclass
class CustomerMargin:
    customer: str
    plan: str | None
    revenue: Decimal
    source: str  # invoiced | rated | invoiced+rated | none
    cost: Decimal
    events: int
    interactions: int
    currency: str = "USD"
    period: Period | None = None
    tokens: TokenCounts = NO_TOKENS

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost

    @property
    def margin_pct(self) -> Decimal | None:
        return margin_pct(self.revenue, self.cost)


@dataclass
class BreakdownRow:
    key: str
    customers: int
    events: int
    cost: Decimal
    revenue: Decimal  # allocated
    tokens: TokenCounts = NO_TOKENS

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost

    @property
    def margin_pct(self) -> Decimal | None:
        return margin_pct(self.revenue, self.cost)


@dataclass
class DailyRow:
    """One UTC day of the period: its events, their cost and tokens, and the revenue of each
    customer allocated across its days like a breakdown's (``allocate``)."""

    day: date
    events: int
    cost: Decimal
    revenue: Decimal
    tokens: TokenCounts = NO_TOKENS

    @property
    def margin(self) -> Decimal:
        return self.revenue - self.cost


@dataclass(frozen=True)
class SegmentRow:
    """The customer at a usage percentile, with its own figures."""

    name: str  # light | median | heavy | power
    percentile: int
    customer: CustomerMargin

    def sentence(self) -> str:
        from billing.reports.render import money, pct

        c = self.customer
        return (f"{self.name} user (P{self.percentile}): {c.interactions:,} interactions, {money(c.cost, c.currency, '$')} "
                f"cost, {money(c.revenue, c.currency, '$')} revenue, {pct(c.margin_pct, 0)} margin")


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
    kept: list[FlaggedGroup] = field(default_factory=list)  # unpriced events by model, unmetered ones by type
    split: dict = field(default_factory=dict)  # customer -> reports.costs_beyond.CostSplit (AI / other / overhead)
    daily: list[DailyRow] = field(default_factory=list)  # with ``daily``: the period day by day (UTC)

    @property
    def unpriced_usage(self) -> list[FlaggedGroup]:
        return [g for g in self.kept if g.status == "unpriced"]

    @property
    def unmetered_usage(self) -> list[FlaggedGroup]:
        return [g for g in self.kept if g.status == "unmetered"]

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

    @property
    def tokens(self) -> TokenCounts:
        return sum((c.tokens for c in self.customers), NO_TOKENS)

    @property
    def currencies(self) -> list[str]:
        return sorted({c.currency for c in self.customers}) or ["USD"]

    @property
    def currency(self) -> str:
        return self.currencies[0]

    def is_whale(self, c: CustomerMargin) -> bool:
        pct = c.margin_pct
        return c.cost > c.revenue or (self.whale_margin_pct is not None and pct is not None
                                      and pct < self.whale_margin_pct)

    def whales(self) -> list[CustomerMargin]:
        return sorted((c for c in self.customers if self.is_whale(c)), key=lambda c: (c.margin, c.customer))

    def usage_segments(self) -> list[SegmentRow]:
        ranked = sorted(self.customers, key=lambda c: (c.interactions, c.cost, c.customer))
        if not ranked:
            return []
        out = []
        for p in PERCENTILES:
            index = percentile(list(range(len(ranked))), p)
            out.append(SegmentRow(SEGMENT_NAMES.get(p, f"P{p}"), p, ranked[int(index)]))
        return out

    def percentiles(self) -> dict[str, dict[str, Decimal | None]]:
        cs = self.customers
        return {"interactions": percentiles([Decimal(c.interactions) for c in cs]),
                "cost": percentiles([c.cost for c in cs]),
                "revenue": percentiles([c.revenue for c in cs]),
                "margin": percentiles([c.margin for c in cs])}

    def plans(self) -> list[tuple[str, list[CustomerMargin]]]:
        """Customers grouped by plan (most revenue first)."""
        groups: dict[str, list[CustomerMargin]] = defaultdict(list)
        for c in self.customers:
            groups[c.plan or "(no plan)"].append(c)
        return sorted(groups.items(), key=lambda kv: (-sum((c.revenue for c in kv[1]), ZERO), kv[0]))

    def to_json(self) -> dict:
        from billing.reports.export import report_json

        return report_json(self)

    def to_csv(self) -> str:
        from billing.reports.export import report_csv

        return report_csv(self)


# ---------------------------------------------------------------------------- building

def customer_periods(zones: dict[str, tuple[str, str]], label: str) -> dict[str, Period]:
    """customer -> the month ``label`` in the customer's time zone."""
    cache: dict[str, Period] = {}
    out = {}
    for customer, (tz, _) in zones.items():
        if tz not in cache:
            cache[tz] = parse_period_label(label, tz)
        out[customer] = cache[tz]
    return out


def margin_report(engine: Engine, catalog: Catalog, label: str, *, as_of: datetime | None = None,
                  by: str | tuple[str, ...] | None = None, allocate: str = "events", whale_margin_pct: Decimal | None = None,
                  interaction_type: str = "llm.call", rollups: bool = True, daily: bool = False) -> MarginReport:
    """The margin report of month ``label`` (module docstring). ``rollups`` False: costs and
    counts from the events even where the hourly rollups are exact (the property test's
    reference path). ``by``: a property, or two (a two-way breakdown: keys ``a / b``).
    ``daily``: with the daily series (``DailyRow``)."""
    props = repo._props(by)
    by = props if len(props) > 1 else (props[0] if props else None)
    if allocate not in ("events", "cost"):
        raise ValueError("allocate must be 'events' or 'cost'")
    if whale_margin_pct is not None and not whale_margin_pct.is_finite():
        raise ValueError("the whale margin threshold must be a finite number")
    as_of = as_of or datetime.now(UTC)
    if as_of.tzinfo is None:
        raise ValueError("as_of needs a timezone")
    utc = parse_period_label(label)
    with engine.connect() as conn:
        try:
            if conn.dialect.name == "postgresql":  # the transaction's own work_mem (README Configuration)
                from billing.config import get_settings

                conn.execute(text("SELECT set_config('work_mem', :v, true)"), {"v": get_settings().report_work_mem})
            zones = repo.customers(conn)
            periods = customer_periods(zones, label)
            lo = min((p.start for p in periods.values()), default=utc.start)
            hi = max((p.end for p in periods.values()), default=utc.end)
            subs = repo.subscriptions_overlapping(conn, lo, hi)
            lines = repo.billed_lines(conn, lo, hi, as_of)
            rows, kept, known = _costs_per_zone(conn, periods, as_of, by, interaction_type, rollups,
                                                outcome_types(catalog))
            days = _costs_per_zone(conn, periods, as_of, repo.DAY, interaction_type, rollups)[0] if daily else []
            billed, billed_subs = _billed_revenue(lines, periods, as_of)
            open_subs = [s for s in subs if s.id not in billed_subs]
            rated = rate_to_date(conn, catalog, open_subs, periods, as_of, max_event_id(conn),
                                 rollups=rollups) if open_subs else []
            split = splits(conn, catalog, periods, subs, as_of, rollups, known)  # costs beyond tokens, overhead
        finally:
            conn.rollback()
    rated_revenue: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for w in rated:
        rated_revenue[w.customer] += w.invoice.total
    customers = _customer_margins(rows, billed, rated_revenue, _plan_names(subs, periods), zones, periods)
    report = MarginReport(label, as_of, customers, ", ".join(props) or None, allocate, whale_margin_pct=whale_margin_pct,
                          kept=_merged(kept), split=split)
    if by:
        _breakdown(report, rows)
    if daily:
        report.daily = _daily(report, days)
    return report


def _costs_per_zone(conn, periods: dict[str, Period], as_of: datetime, by: str | None, interaction_type: str,
                    rollups: bool = True, split_types: list[str] | None = None
                    ) -> tuple[list[repo.CostRow], list[FlaggedGroup], dict[Period, list[SplitRow]]]:
    """Cost and counts per customer (and per property value), and the flagged events kept
    out of them, up to ``as_of``: one query per time zone. ``split_types`` (without ``by``):
    also the cost split (``costs_beyond.splits``' ``known``) of each zone the hourly rollups
    answer, read in the same scan of them (``costs_and_split``)."""
    by_zone: dict[Period, list[str]] = defaultdict(list)
    for customer, p in periods.items():
        by_zone[p].append(customer)
    rows: list[repo.CostRow] = []
    kept: list[FlaggedGroup] = []
    split: dict[Period, list[SplitRow]] = {}
    for p, members in by_zone.items():
        end = min(p.end, as_of)
        if end <= p.start:
            continue
        only = members if len(by_zone) > 1 else None
        both = (costs_and_split(conn, to_us(p.start), to_us(end), interaction_type, split_types, only)
                if rollups and by is None and split_types is not None else None)
        if both is not None:
            rows.extend(both[0])
            split[p] = both[1]
        else:
            rows.extend(repo.cost_by(conn, to_us(p.start), to_us(end), by, customers=only,
                                     interaction_type=interaction_type, rollups=rollups, tokens=True))
        kept.extend(flagged_totals(conn, start_us=to_us(p.start), end_us=to_us(end), customers=only))
    return rows, kept, split


def _billed_revenue(lines: list[repo.BilledLine], periods: dict[str, Period],
                    as_of: datetime) -> tuple[dict[str, Decimal], set[int]]:
    """What each customer's documents bill for its period as of ``as_of``, and the
    subscriptions they bill. A window counts as invoiced once a document closed it: until
    then its advance fees and threshold invoices bill it only in part (it is rated to date)."""
    billed: dict[str, Decimal] = defaultdict(lambda: ZERO)
    mine = [ln for ln in lines if (p := periods.get(ln.customer)) is not None and p.start <= ln.service_start < p.end]
    billed_subs = {ln.subscription_id for ln in mine if ln.closes and ln.subscription_id is not None}
    for ln in mine:
        if ln.subscription_id is None or ln.subscription_id in billed_subs:
            billed[ln.customer] += from_minor(ln.counts_at(as_of), ln.currency)
    return billed, billed_subs


def _plan_names(subs: list, periods: dict[str, Period]) -> dict[str, str]:
    """customer -> ``plan@vN`` of the latest subscription in its period (``subs`` oldest first)."""
    plan_of: dict[str, str] = {}
    for s in subs:
        p = periods.get(s.customer_id)
        if p is not None and s.started_at < p.end and (s.ended_at is None or s.ended_at > p.start):
            plan_of[s.customer_id] = f"{s.plan_id}@v{s.plan_version}"
    return plan_of


def _customer_margins(rows: list[repo.CostRow], billed: dict[str, Decimal], rated_revenue: dict[str, Decimal],
                      plan_of: dict[str, str], zones: dict[str, tuple[str, str]],
                      periods: dict[str, Period]) -> list[CustomerMargin]:
    """One margin per customer with a cost, a billed amount or a plan, in customer order."""
    cost: dict[str, int] = defaultdict(int)
    events: dict[str, int] = defaultdict(int)
    inter: dict[str, int] = defaultdict(int)
    tokens: dict[str, TokenCounts] = defaultdict(lambda: NO_TOKENS)
    for r in rows:
        cost[r.customer] += r.cost_pico
        events[r.customer] += r.events
        inter[r.customer] += r.interactions
        tokens[r.customer] += TokenCounts.of(r.tokens)
    customers = []
    for customer in sorted(set(cost) | set(billed) | set(plan_of)):
        parts = [name for name, present in (("invoiced", customer in billed), ("rated", customer in rated_revenue))
                 if present]
        revenue = billed.get(customer, ZERO) + rated_revenue.get(customer, ZERO)
        customers.append(CustomerMargin(customer, plan_of.get(customer), revenue, "+".join(parts) or "none",
                                        Decimal(cost[customer]) / PICO, events[customer], inter[customer],
                                        zones.get(customer, ("UTC", "USD"))[1], periods.get(customer),
                                        tokens.get(customer, NO_TOKENS)))
    return customers


def _merged(groups: list[FlaggedGroup]) -> list[FlaggedGroup]:
    """One group per (status, model or type) over the time zones (their customers differ)."""
    out: dict[tuple[str, str | None], FlaggedGroup] = {}
    for g in groups:
        had = out.get((g.status, g.key))
        out[(g.status, g.key)] = g if had is None else FlaggedGroup(
            g.status, g.key, had.customers + g.customers, had.events + g.events, had.tokens + g.tokens,
            had.cost_pico + g.cost_pico)
    return sorted(out.values(), key=lambda g: (g.status != "unpriced", -g.events, g.key or ""))


def _daily(report: MarginReport, rows: list[repo.CostRow]) -> list[DailyRow]:
    """The period day by day: each customer's revenue allocated across the days of its
    events (all of it on the period's first day without events)."""
    per_customer: dict[str, list[repo.CostRow]] = defaultdict(list)
    for r in rows:
        per_customer[r.customer].append(r)
    out: dict[date, DailyRow] = {}
    for c in report.customers:
        mine = sorted(per_customer.get(c.customer, []), key=lambda r: int(r.key))
        weights = [(r.key, r.events if report.allocate == "events" else r.cost_pico) for r in mine]
        shares = allocate(c.revenue, weights, quantum(c.currency)) if weights else {}
        if not mine and c.revenue and c.period is not None:
            first = c.period.start.astimezone(UTC).date()
            out.setdefault(first, DailyRow(first, 0, ZERO, ZERO)).revenue += c.revenue
        for r in mine:
            day = EPOCH_DAY + timedelta(days=int(r.key))
            row = out.setdefault(day, DailyRow(day, 0, ZERO, ZERO))
            row.events += r.events
            row.cost += Decimal(r.cost_pico) / PICO
            row.revenue += shares.get(r.key, ZERO)
            row.tokens += TokenCounts.of(r.tokens)
    return [out[d] for d in sorted(out)]


def _breakdown(report: MarginReport, rows: list) -> None:
    per_customer: dict[str, list] = defaultdict(list)
    for r in rows:
        per_customer[r.customer].append(r)
    totals: dict[str, BreakdownRow] = {}
    detail = []
    for c in report.customers:
        mine = sorted(per_customer.get(c.customer, []), key=lambda x: (x.key is None, x.key or ""))
        keyed = [r for r in mine if r.key is not None]
        if keyed:
            weights = [(r.key, r.events if report.allocate == "events" else r.cost_pico) for r in keyed]
            shares = allocate(c.revenue, weights, quantum(c.currency))
        else:
            shares = {}
        if not shares and c.revenue and not any(r.key is None for r in mine):
            mine.append(repo.CostRow(c.customer, None, 0, 0, 0))  # revenue with no usage at all
        for r in mine:
            key = NONE_KEY if r.key is None else r.key
            revenue = shares.get(r.key, ZERO) if r.key is not None else (ZERO if shares else c.revenue)
            row = BreakdownRow(key, 1, r.events, Decimal(r.cost_pico) / PICO, revenue, TokenCounts.of(r.tokens))
            detail.append((c.customer, row))
            agg = totals.setdefault(key, BreakdownRow(key, 0, 0, ZERO, ZERO))
            agg.customers += 1
            agg.events += row.events
            agg.cost += row.cost
            agg.revenue += row.revenue
            agg.tokens += row.tokens
    report.breakdown = sorted(totals.values(), key=lambda r: (r.key == NONE_KEY, -r.cost, r.key))
    report.per_customer_breakdown = detail


__all__ = ["TokenCounts", "DailyRow", "BreakdownRow", "CustomerMargin", "MarginReport", "SegmentRow", "customer_periods", "margin_report"]
