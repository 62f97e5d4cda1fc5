"""Re-rate a past period's real events from the ledger under candidate plans, next to what
was actually billed. Read-only: one read transaction, rolled back; no invoice, counter or
event is written (``tests/test_simulate_history.py`` runs it on a read-only database).

For each customer with a subscription or events in the period (a calendar month in the
customer's time zone):

- events: every event of the period (plus dispute events up to the longest dispute window
  after it), re-costed with the cost book after the what-if levers (``actual_cost`` is the
  cost stored at ingestion);
- the subscription: the latest one overlapping the period gives the seat history and the
  trial; the customer's subscriptions together give the active window (a customer who
  joined on the 15th is prorated under every candidate plan, as the close prorated it; a
  plan change mid-period is one candidate plan for the whole window);
- actual: what was billed for the period -- the lines of finalized (not void) invoices and
  credit notes whose service window starts in the customer's period, including the
  adjustments later closes issued for it (the margin report's invoiced revenue);
- segment: the customer's usage band by interactions (``llm.call`` events) across the
  customers of the run: light (<= P25), moderate, regular, heavy (P90-P99], power (> P99);
  ``actual_plan`` groups them by the plan they are on.

Prepaid credit grants are not applied to the candidate plans (their balances have moved
since); plan credits are.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine

from billing.catalog.schema import Plan
from billing.costs import CostBook
from billing.ledger.types import from_us, to_us
from billing.money import from_minor
from billing.rating.periods import Period, parse_period_label
from billing.reports import repository as repo
from billing.reports.stats import band_order, usage_bands
from billing.simulate.core import CustomerInput, Simulation, simulate
from billing.simulate.levers import Levers
from billing.simulate.sim_event import SimEvent

PICO = Decimal(10) ** 12


def history_inputs(engine: Engine, label: str, plans: list[Plan] = (), *, as_of: datetime | None = None,
                   interaction_type: str = "llm.call") -> tuple[Period, list[CustomerInput]]:
    utc = parse_period_label(label)
    window = Period(utc.start - timedelta(days=1), utc.end + timedelta(days=1))
    tail_days = max((m.disputes.window_days for p in plans for m in p.meters if m.disputes), default=0)
    dispute_types = {t for p in plans for m in p.meters if m.disputes for t in m.disputes.dispute_types}
    as_of = as_of or datetime.now(UTC)
    with engine.connect() as conn:
        try:
            zones = repo.customers(conn)
            subs = repo.subscriptions_overlapping(conn, window.start, window.end)
            events = repo.events_between(conn, to_us(window.start), to_us(window.end))
            if tail_days and dispute_types:
                events += repo.events_between(conn, to_us(window.end), to_us(window.end + timedelta(days=tail_days)),
                                              types=dispute_types)
            lines = repo.billed_lines(conn, window.start, window.end, as_of)
            seats = repo.seat_histories(conn, [s.id for s in subs])
        finally:
            conn.rollback()

    periods: dict[str, Period] = {}

    def period_of(customer: str) -> Period:
        if customer not in periods:
            tz = zones.get(customer, ("UTC", "USD"))[0]
            periods[customer] = parse_period_label(label, tz)
        return periods[customer]

    sub_of = {}
    first_start: dict[str, datetime] = {}
    last_end: dict[str, datetime | None] = {}
    for s in subs:  # oldest first: the latest overlapping subscription wins
        p = period_of(s.customer_id)
        if s.started_at < p.end and (s.ended_at is None or s.ended_at > p.start):
            sub_of[s.customer_id] = s
            first_start.setdefault(s.customer_id, s.started_at)
            ends = last_end.get(s.customer_id, s.ended_at)
            last_end[s.customer_id] = None if ends is None or s.ended_at is None else max(ends, s.ended_at)
    by_customer: dict[str, list[SimEvent]] = defaultdict(list)
    stored_cost: dict[str, int] = defaultdict(int)
    interactions: dict[str, int] = defaultdict(int)
    for e in events:
        p = period_of(e.customer)
        ts = from_us(e.ts)
        by_customer[e.customer].append(SimEvent(e.event_id, e.customer, e.type, ts, dict(e.properties)))
        if p.start <= ts < p.end:
            stored_cost[e.customer] += e.cost_pico
            interactions[e.customer] += e.type == interaction_type
    billed: dict[str, int] = defaultdict(int)
    currency: dict[str, str] = {}
    for ln in lines:
        p = period_of(ln.customer)
        if p.start <= ln.service_start < p.end:
            billed[ln.customer] += ln.counts_at(as_of)
            currency[ln.customer] = ln.currency

    customers = sorted(set(by_customer) | set(sub_of))
    bands = usage_bands({c: interactions.get(c, 0) for c in customers})
    inputs = []
    for customer in sorted(customers, key=lambda c: (band_order(bands[c]), c)):
        p = period_of(customer)
        sub = sub_of.get(customer)
        history = seats.get(sub.id, []) if sub else []
        actual = from_minor(billed[customer], currency[customer]) if customer in currency else None
        inputs.append(CustomerInput(
            customer, by_customer.get(customer, []), segment=bands[customer], seat_changes=tuple(history), period=p,
            actual=actual, actual_cost=Decimal(stored_cost[customer]) / PICO,
            actual_plan=f"{sub.plan_id}@v{sub.plan_version}" if sub else "(no subscription)",
            active_from=first_start[customer] if sub and first_start[customer] > p.start else None,
            active_until=last_end[customer] if sub and last_end[customer] and last_end[customer] < p.end else None,
            trial_end=sub.trial_end if sub and sub.trial_end and sub.trial_end > p.start else None))
    return utc, inputs


def simulate_history(engine: Engine, label: str, plans: list[Plan], book: CostBook, *,
                     levers: Levers | None = None) -> Simulation:
    """Re-rate ``label`` (YYYY-MM) from the ledger under ``plans`` (segments: usage bands)."""
    period, inputs = history_inputs(engine, label, plans)
    return simulate(plans, inputs, period, book, levers=levers, source="history")


__all__ = ["history_inputs", "simulate_history", "to_us"]
