"""Rate subscriptions to date: what each subscription's part of an open period bills so far.

A subscription's *window* in a customer's period ``[start, end)`` is the period cut to the
subscription's start and end (a plan change mid-period gives two windows, each rated under
its own plan, as the close will invoice them). Rated to ``as_of``: the meters are aggregated
in SQL over ``[window start, min(window end, as_of))`` (``aggregate_window``, the same query
the close uses), and the rating engine prices them with the subscription's seats, credit
grants, proration and trial. Recurring fees in advance count in full.

With ``scale`` (customer -> factor, forecasts), count/sum meter totals and costs are
multiplied by the factor first; ``max`` and ``unique_count`` meters stay as observed.
Read-only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection

from billing.catalog import Catalog
from billing.catalog.schema import Plan
from billing.ledger.aggregate_sql import aggregate_window, usage_before_expiries
from billing.ledger.counters import to_micro
from billing.ledger.types import to_us
from billing.rating.engine import RatingInput, rate_period
from billing.rating.periods import Period, seat_segments
from billing.rating.types import CreditGrant, MeterTotals, RatedInvoice
from billing.reports import repository as repo

ZERO = Decimal(0)
MICRO = Decimal(10) ** 6


@dataclass(frozen=True)
class RatedWindow:
    sub: object  # billing.ledger.models.Subscription
    plan: Plan
    period: Period
    start: datetime  # the window: the period cut to the subscription
    end: datetime
    rated_until: datetime  # min(end, as_of)
    invoice: RatedInvoice
    usage: dict  # meter key -> MeterTotals the invoice was rated on
    max_seats: int = 1  # most seats held during the period

    @property
    def customer(self) -> str:
        return self.sub.customer_id


def window_of(sub, period: Period) -> tuple[datetime, datetime] | None:
    start = max(period.start, sub.started_at)
    end = min(period.end, sub.ended_at) if sub.ended_at else period.end
    return (start, end) if start < end else None


def rate_windows(conn: Connection, catalog: Catalog, subs: list, periods: dict[str, Period], as_of: datetime,
                 watermark: int, scale: dict[str, Decimal] | None = None) -> list[RatedWindow]:
    """Every subscription's window in its customer's period, rated on the events up to
    ``as_of`` (and ``id <= watermark``). Windows that start after ``as_of`` are left out."""
    jobs = []
    for s in subs:
        p = periods.get(s.customer_id)
        w = window_of(s, p) if p is not None else None
        if w is None or w[0] >= as_of:
            continue
        jobs.append((s, p, w[0], w[1], min(w[1], as_of)))
    if not jobs:
        return []
    seats = repo.seat_histories(conn, [s.id for s, *_ in jobs])
    grants = repo.grant_balances(conn, [s.customer_id for s, *_ in jobs])
    groups: dict[tuple, list] = defaultdict(list)
    for job in jobs:
        s, p, start, _, until = job
        groups[(s.plan_id, s.plan_version, p, start, until)].append(job)
    measured: dict[int, tuple[Plan, dict, Decimal]] = {}  # subscription id -> (plan, usage, cost)
    for (plan_id, version, p, start, until), members in groups.items():
        plan = catalog.get(plan_id, version)
        ids = sorted({s.customer_id for s, *_ in members})
        usage_of, cost_of = aggregate_window(conn, plan, ids, to_us(start), to_us(until), watermark)
        for s, *_ in members:
            measured[s.id] = (plan, usage_of.get(s.customer_id, {}), cost_of.get(s.customer_id, ZERO))
    # a customer's windows in time order, each drawing on what the earlier ones left of the
    # grants (as the close burns them window after window)
    left = {c: {g.id: balance for g, balance in rows} for c, rows in grants.items()}
    out = []
    for s, p, start, end, until in sorted(jobs, key=lambda j: (j[0].customer_id, j[2], j[0].id)):
        plan, usage, cost = measured[s.id]
        k = (scale or {}).get(s.customer_id)
        if k is not None:
            usage = {key: scaled_totals(plan, key, t, k) for key, t in usage.items()}
            cost = cost * k
        balances = left.get(s.customer_id, {})
        rows = [(g, balances[g.id]) for g, _ in grants.get(s.customer_id, [])]
        g = [CreditGrant(g.id, Decimal(balance) / MICRO, g.name, g.expires_at, g.effective_at,
                         tuple(g.applies_to.split(",")) if g.applies_to else None)
             for g, balance in rows if balance > 0]
        # a grant that expired by now covered only the usage before its expiry, as the close
        # will rate it (also under a forecast: that usage is past, known exactly; a grant
        # expiring after now covers the projected usage as a whole)
        before = usage_before_expiries(conn, plan, s.customer_id, p, start, until, rows, watermark)
        inv = rate_period(RatingInput(plan, s.customer_id, p, usage, seat_changes=seats.get(s.id, []),
                                      grants=g, active_from=s.started_at if s.started_at > p.start else None,
                                      active_until=s.ended_at if s.ended_at and s.ended_at < p.end else None,
                                      trial_end=s.trial_end, provider_cost=cost, usage_before=before))
        for grant_id, amount in inv.credits_used.items():
            if grant_id in balances:
                balances[grant_id] -= to_micro(amount)
        history = seats.get(s.id, [])
        most = max((seg.seats for seg in seat_segments(history, p)), default=1) if history else 1
        out.append(RatedWindow(s, plan, p, start, end, until, inv, usage, most))
    out.sort(key=lambda w: (w.customer, w.start, w.sub.id))
    return out


def scaled_totals(plan: Plan, key: str, totals: MeterTotals, k: Decimal) -> MeterTotals:
    try:
        aggregation = plan.meter(key).aggregation
    except KeyError:
        aggregation = "count"
    if aggregation in ("max", "unique_count"):
        return MeterTotals(totals.units, totals.events, totals.cost * k, totals.transactions)
    return MeterTotals(totals.units * k, int((totals.events * k).to_integral_value()), totals.cost * k,
                       totals.transactions)
