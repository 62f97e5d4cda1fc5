"""Re-rate a past period's real events from the ledger under candidate plans, next to what
was actually billed. Read-only: one read transaction, rolled back; no invoice, counter or
event is written (``tests/reports/test_accrual.py`` runs it on a read-only database).

For each customer with a subscription or events in the period (a calendar month in the
customer's time zone):

- usage: without what-if levers, every candidate plan's meters are aggregated in SQL by the
  window rating service's ``measure`` (``billing.invoicing.windows``: the usage the close
  and rating to date read, one query per plan and period for all customers; its seat
  histories come from ``store.grants_and_seats`` like theirs) and the cost is the stored
  provider cost; with levers, the period's events (plus dispute events up to the longest
  dispute window after it) are loaded, transformed by the levers, re-costed with the cost
  book (an event it cannot price costs 0, as the ledger keeps it unpriced) and aggregated by
  ``billing.rating.meters`` (a test holds both ways equal);
- the subscription: the latest one overlapping the period gives the seat history and the
  trial; the customer's subscriptions together give the active window (a customer who
  joined on the 15th is prorated under every candidate plan, as the close prorated it; a
  plan change mid-period is one candidate plan for the whole window);
- actual: what was billed for the period -- the lines of finalized invoices and credit
  notes whose service window starts in the customer's period, including the adjustments
  later closes issued for it (the margin report's invoiced revenue); ``actual_cost`` is the
  stored provider cost;
- segment: the customer's usage band by interactions (``llm.call`` events) across the
  customers of the run: light (<= P25), moderate, regular, heavy (P90-P99], power (> P99);
  ``actual_plan`` groups them by the plan they are on.

Prepaid credit grants are not applied to the candidate plans (their balances have moved
since); plan credits are.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection, Engine

from billing.catalog.schema import Plan
from billing.costs import CostBook
from billing.invoicing.windows import UsageSpan, measure
from billing.store.aggregate_sql import max_event_id
from billing.store.grants_and_seats import seat_histories
from billing.store.types import from_us, to_us
from billing.money import from_minor
from billing.rating.periods import Period, parse_period_label
from billing.reports import repository as repo
from billing.reports.margins import customer_periods
from billing.reports.rollup_usage import rollup_measure
from billing.reports.stats import band_order, usage_bands
from billing.simulate.core import CustomerInput, CustomerTotals, Simulation, rate_totals, simulate
from billing.simulate.levers import Levers
from billing.simulate.sim_event import SimEvent

PICO = Decimal(10) ** 12


@dataclass
class _Customer:
    """What the ledger says about one customer's period, besides its usage."""

    customer: str
    period: Period
    sub: object | None = None  # the latest subscription overlapping the period
    first_start: datetime | None = None
    last_end: datetime | None = None  # None: still active at the period end
    seats: tuple = ()
    actual_minor: int = 0
    currency: str | None = None
    cost_pico: int = 0
    interactions: int = 0
    events: int = 0
    segment: str = ""

    def fields(self) -> dict:
        p, sub = self.period, self.sub
        return dict(segment=self.segment, seat_changes=self.seats, period=p,
                    actual=from_minor(self.actual_minor, self.currency) if self.currency else None,
                    actual_cost=Decimal(self.cost_pico) / PICO,
                    actual_plan=f"{sub.plan_id}@v{sub.plan_version}" if sub else "(no subscription)",
                    active_from=self.first_start if sub and self.first_start > p.start else None,
                    active_until=self.last_end if sub and self.last_end and self.last_end < p.end else None,
                    trial_end=sub.trial_end if sub and sub.trial_end and sub.trial_end > p.start else None)


def _context(conn: Connection, label: str, as_of: datetime, interaction_type: str,
             rollups: bool = True) -> dict[str, _Customer]:
    """Every customer with a subscription or an event in its period ``label``."""
    utc = parse_period_label(label)
    zones = repo.customers(conn)
    periods = customer_periods(zones, label)
    lo = min((p.start for p in periods.values()), default=utc.start)
    hi = max((p.end for p in periods.values()), default=utc.end)
    out: dict[str, _Customer] = {}

    def get(customer: str) -> _Customer:
        if customer not in out:
            out[customer] = _Customer(customer, periods.get(customer) or utc)
        return out[customer]

    subs = repo.subscriptions_overlapping(conn, lo, hi)
    for s in subs:  # oldest first: the latest overlapping subscription wins
        c = get(s.customer_id)
        if s.started_at < c.period.end and (s.ended_at is None or s.ended_at > c.period.start):
            ends = c.last_end if c.sub is not None else s.ended_at
            c.last_end = None if ends is None or s.ended_at is None else max(ends, s.ended_at)
            c.first_start = c.first_start or s.started_at
            c.sub = s
    seats = seat_histories(conn, [c.sub.id for c in out.values() if c.sub is not None])
    for c in out.values():
        if c.sub is not None:
            c.seats = tuple(seats.get(c.sub.id, []))
    by_zone: dict[Period, list[str]] = defaultdict(list)
    for customer, p in periods.items():
        by_zone[p].append(customer)
    for p, members in by_zone.items():
        for row in repo.cost_by(conn, to_us(p.start), to_us(p.end), customers=members if len(by_zone) > 1 else None,
                                interaction_type=interaction_type, rollups=rollups):
            c = get(row.customer)
            c.cost_pico += row.cost_pico
            c.interactions += row.interactions
            c.events += row.events
    for ln in repo.billed_lines(conn, lo, hi, as_of):
        c = get(ln.customer)
        if c.period.start <= ln.service_start < c.period.end:
            c.actual_minor += ln.counts_at(as_of)
            c.currency = ln.currency
    out = {k: v for k, v in out.items() if v.sub is not None or v.events or v.currency}
    bands = usage_bands({k: v.interactions for k, v in out.items()})
    for k, c in out.items():
        c.segment = bands[k]
    return dict(sorted(out.items(), key=lambda kv: (band_order(kv[1].segment), kv[0])))


def history_totals(engine: Engine, label: str, plans: list[Plan], *, as_of: datetime | None = None,
                   interaction_type: str = "llm.call", rollups: bool = True) -> tuple[Period, list[CustomerTotals]]:
    """Each customer's meter totals under every plan, aggregated in SQL (no levers): from the
    hourly rollups where they count a plan exactly (``billing.reports.rollup_usage``), else
    (and with ``rollups`` False) from the events."""
    as_of = as_of or datetime.now(UTC)
    with engine.connect() as conn:
        try:
            context = _context(conn, label, as_of, interaction_type, rollups)
            watermark = max_event_id(conn)
            by_period: dict[Period, list[str]] = defaultdict(list)
            for c in context.values():
                by_period[c.period].append(c.customer)
            spans = [UsageSpan(plan, customer, p.start, p.end)
                     for p, members in by_period.items() for plan in plans for customer in members]
            usage: dict[str, dict[str, dict]] = defaultdict(dict)
            counted = rollup_measure(conn, spans, watermark) if rollups else [None] * len(spans)
            rest = [span for span, found in zip(spans, counted) if found is None]
            measured = iter(measure(conn, rest, watermark))
            for span, found in zip(spans, counted):  # the rollups where exact, else the events
                meters, _ = found if found is not None else next(measured)
                usage[span.customer][span.plan.ref] = meters
        finally:
            conn.rollback()
    out = [CustomerTotals(c.customer, {}, Decimal(c.cost_pico) / PICO, usage_by_plan=usage[c.customer],
                          interactions=c.interactions, seats=1, **c.fields())
           for c in context.values()]
    return parse_period_label(label), out


def history_inputs(engine: Engine, label: str, plans: list[Plan] = (), *, as_of: datetime | None = None,
                   interaction_type: str = "llm.call") -> tuple[Period, list[CustomerInput]]:
    """Each customer's events of the period (for the levers to transform)."""
    utc = parse_period_label(label)
    window = Period(utc.start - timedelta(days=1), utc.end + timedelta(days=1))
    tail_days = max((m.disputes.window_days for p in plans for m in p.meters if m.disputes), default=0)
    dispute_types = {t for p in plans for m in p.meters if m.disputes for t in m.disputes.dispute_types}
    as_of = as_of or datetime.now(UTC)
    with engine.connect() as conn:
        try:
            context = _context(conn, label, as_of, interaction_type)
            events = repo.events_between(conn, to_us(window.start), to_us(window.end))
            if tail_days and dispute_types:
                events += repo.events_between(conn, to_us(window.end), to_us(window.end + timedelta(days=tail_days)),
                                              types=dispute_types)
        finally:
            conn.rollback()
    by_customer: dict[str, list[SimEvent]] = defaultdict(list)
    for e in events:
        by_customer[e.customer].append(SimEvent(e.event_id, e.customer, e.type, from_us(e.ts), dict(e.properties)))
    return utc, [CustomerInput(c.customer, by_customer.get(c.customer, []), **c.fields()) for c in context.values()]


def simulate_history(engine: Engine, label: str, plans: list[Plan], book: CostBook, *,
                     levers: Levers | None = None, as_of: datetime | None = None,
                     progress: Callable[[int], None] | None = None) -> Simulation:
    """Re-rate ``label`` (YYYY-MM) from the ledger under ``plans`` (segments: usage bands)."""
    if levers is None or levers.is_identity:
        period, totals = history_totals(engine, label, plans, as_of=as_of)
        return rate_totals(plans, totals, period, source="history", progress=progress)
    period, inputs = history_inputs(engine, label, plans, as_of=as_of)
    return simulate(plans, inputs, period, book, levers=levers, source="history", progress=progress,
                    keep_unpriced=True)


__all__ = ["history_inputs", "history_totals", "simulate_history"]
