"""Re-rate a past period's real events from the ledger under candidate plans, next to what
was actually billed. Read-only: one read transaction, rolled back; no invoice, counter or
event is written.

For each customer with a subscription or events in the period (a calendar month in the
customer's time zone):

- events: every event of the period (plus dispute events up to the longest dispute window
  after it), re-costed with the cost book after the what-if levers (``actual_cost`` is the
  cost stored at ingestion);
- seats: the seat history of the customer's latest subscription overlapping the period;
- actual: the sum of the finalized/paid invoices and credit notes whose service period
  starts inside the customer's period (adjustments for late events land on the next
  invoice and count there).

Prepaid credit grants are not applied to the candidate plans (their balances have moved
since); plan credits are.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import Engine

from billing.catalog.schema import Plan
from billing.costs import CostBook
from billing.ledger.types import from_us, to_us
from billing.money import from_minor
from billing.rating.periods import Period, parse_period_label
from billing.reports import repository as repo
from billing.simulate.core import CustomerInput, Simulation, simulate
from billing.simulate.levers import Levers
from billing.simulate.sim_event import SimEvent

PICO = Decimal(10) ** 12


def history_inputs(engine: Engine, label: str, plans: list[Plan] = ()) -> tuple[Period, list[CustomerInput]]:
    utc = parse_period_label(label)
    window = Period(utc.start - timedelta(days=1), utc.end + timedelta(days=1))
    tail_days = max((m.disputes.window_days for p in plans for m in p.meters if m.disputes), default=0)
    dispute_types = {t for p in plans for m in p.meters if m.disputes for t in m.disputes.dispute_types}
    with engine.connect() as conn:
        try:
            zones = repo.customers(conn)
            subs = repo.subscriptions_overlapping(conn, window.start, window.end)
            events = repo.events_between(conn, to_us(window.start), to_us(window.end))
            if tail_days and dispute_types:
                events += repo.events_between(conn, to_us(window.end), to_us(window.end + timedelta(days=tail_days)),
                                              types=dispute_types)
            invoices = repo.invoices_starting_between(conn, window.start, window.end)
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
    for s in subs:  # oldest first: the latest overlapping subscription wins
        p = period_of(s.customer_id)
        if s.started_at < p.end and (s.ended_at is None or s.ended_at > p.start):
            sub_of[s.customer_id] = s
    by_customer: dict[str, list[SimEvent]] = defaultdict(list)
    stored_cost: dict[str, int] = defaultdict(int)
    for e in events:
        p = period_of(e.customer)
        ts = from_us(e.ts)
        by_customer[e.customer].append(SimEvent(e.event_id, e.customer, e.type, ts, dict(e.properties)))
        if p.start <= ts < p.end:
            stored_cost[e.customer] += e.cost_pico
    actual: dict[str, int] = defaultdict(int)
    actual_cost: dict[str, int] = defaultdict(int)
    currency: dict[str, str] = {}
    for inv in invoices:
        p = period_of(inv.customer)
        if p.start <= inv.period_start < p.end:
            actual[inv.customer] += inv.total_minor
            currency[inv.customer] = inv.currency
            if inv.kind == "invoice":
                actual_cost[inv.customer] += inv.provider_cost_pico

    inputs = []
    for customer in sorted(set(by_customer) | set(sub_of)):
        p = period_of(customer)
        sub = sub_of.get(customer)
        history = seats.get(sub.id, []) if sub else []
        billed = from_minor(actual[customer], currency[customer]) if customer in currency else None
        inputs.append(CustomerInput(
            customer, by_customer.get(customer, []), segment=sub.plan_id if sub else "(no subscription)",
            seat_changes=tuple(history), period=p, actual=billed,
            actual_cost=Decimal(stored_cost[customer]) / PICO,
            actual_plan=f"{sub.plan_id}@v{sub.plan_version}" if sub else None))
    return utc, inputs


def simulate_history(engine: Engine, label: str, plans: list[Plan], book: CostBook, *,
                     levers: Levers | None = None) -> Simulation:
    """Re-rate ``label`` (YYYY-MM) from the ledger under ``plans`` (segments: the actual plan)."""
    period, inputs = history_inputs(engine, label, plans)
    return simulate(plans, inputs, period, book, levers=levers, source="history")


__all__ = ["history_inputs", "simulate_history", "to_us"]
