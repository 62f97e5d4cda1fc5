"""Rating subscription windows from the ledger: the one service the close, its late-event
re-rating, and rating to date (margins, forecasts) call; history simulations read their
usage through its ``measure``.

A *window* is a subscription's part of one of its billing periods: the period cut to the
subscription's start and end (a plan change mid-period ends one subscription and starts
another, so it gives two windows, each under its own plan; seat changes inside the window
are the subscription's seat history). ``rated_until`` cuts it further for a to-date view
(``min(end, as_of)``); the close rates whole windows.

For a batch of windows the service

- takes the usage from the running counters where the caller found them exact for the
  window (``from_counters``: the close asks ``invoicing.usage``'s rule with its snapshot),
  otherwise aggregates the events in SQL up to the watermark, one query per (plan, window)
  for all the customers sharing it (``store.aggregate_sql.aggregate_window``);
- applies each subscription's contract (``billing.contracts``): the plan with the overrides
  in force at the window's start, the coupons, term commitments and add-on subscriptions
  applying to it (the result's windows carry them);
- reads seat histories and grant balances per chunk of subscriptions / customers
  (``store.grants_and_seats``), unless the caller passes the grant balances a window may
  draw (a re-rating of a billed period);
- rates each customer's windows in time order through the one rating entry point
  (``billing.rating.engine.rate_period``): credit drawn by one window is gone for the next,
  and a grant that expires inside a window covers only the usage before its expiry
  (``usage_before_expiries``).

With ``scale`` (customer -> factor, forecasts) count/sum meter totals and costs are
multiplied by the factor first (a time-weighted sum too); ``max``, ``unique_count``,
``latest``, ``min`` and ``avg`` meters stay as observed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import NamedTuple, Protocol

from sqlalchemy import Connection

from billing.catalog import Plan
from billing.contracts.repository import contract_terms
from billing.contracts.terms import NO_TERMS, ContractTerms
from billing.invoicing.documents import grant_inputs
from billing.store.aggregate_sql import aggregate_window, usage_before_expiries
from billing.ledger.counters import to_micro
from billing.store.grants_and_seats import GrantBalance, SeatHistory, grant_balances, seat_histories
from billing.store.types import to_us
from billing.rating.engine import RatingInput, rate_period
from billing.rating.periods import Period, seat_segments
from billing.rating.types import AddOn, Discount, MeterTotals, RatedInvoice, TermCommitment

ZERO = Decimal(0)

Usage = tuple[dict[str, MeterTotals], Decimal]  # meter totals, provider cost of the window's events


class WindowSubscription(Protocol):
    """What rating reads of a subscription (``invoicing.usage.SubscriptionRow``,
    ``reports.repository.SubscriptionRow`` and the ORM row all have it)."""

    id: int
    customer_id: str
    trial_end: datetime | None


@dataclass(frozen=True)
class Window:
    sub: WindowSubscription
    plan: Plan
    period: Period
    start: datetime  # the period cut to the subscription
    end: datetime
    rated_until: datetime  # the close: ``end``; to date: ``min(end, as_of)``
    part: str = "whole"  # ``arrears``: without the advance fees a plan invoices up front (``engine.RatingInput.part``)
    # the subscription's contract, filled in by ``rate_windows`` (``billing.contracts``):
    # ``plan`` is then the effective plan (its overrides applied)
    discounts: tuple[Discount, ...] = ()
    commitments: tuple[TermCommitment, ...] = ()
    addons: tuple[AddOn, ...] = ()

    @property
    def customer(self) -> str:
        return self.sub.customer_id


@dataclass(frozen=True)
class RatedWindow:
    window: Window
    invoice: RatedInvoice
    usage: dict[str, MeterTotals]  # what the invoice was rated on
    seats: SeatHistory

    sub = property(lambda self: self.window.sub)
    plan = property(lambda self: self.window.plan)
    period = property(lambda self: self.window.period)
    start = property(lambda self: self.window.start)
    end = property(lambda self: self.window.end)
    rated_until = property(lambda self: self.window.rated_until)
    customer = property(lambda self: self.window.customer)

    @cached_property
    def max_seats(self) -> int:
        """The most seats held during the period (1 without a seat history)."""
        return max((seg.seats for seg in seat_segments(self.seats, self.period)), default=1) if self.seats else 1


def window_of(sub, period: Period) -> tuple[datetime, datetime] | None:
    """The subscription's window in ``period`` (None: it holds no instant of it)."""
    start = max(period.start, sub.started_at)
    end = min(period.end, sub.ended_at) if sub.ended_at else period.end
    return (start, end) if start < end else None


def rate_windows(conn: Connection, windows: Sequence[Window], watermark: int, *,
                 from_counters: Callable[[Window], Usage | None] | None = None,
                 grants: Mapping[str, list[GrantBalance]] | None = None,
                 scale: Mapping[str, Decimal] | None = None,
                 plans: Callable[[str, int], Plan] | None = None) -> list[RatedWindow]:
    """Rate ``windows`` on the ledger up to ``watermark`` (see the module); the result is in
    the order of ``windows``. ``grants``: customer -> (grant, micro-units it may draw), read
    from the ledger when not given. ``plans`` (the catalog's ``get``) resolves the plans of
    add-on subscriptions."""
    if not windows:
        return []
    # the contract first: an override may change how the usage must be read (a price that
    # needs each transaction's value), so the usage is read for the effective plan
    terms = contract_terms(conn, [w.sub.id for w in windows])
    windows = [_contracted(w, terms.get(w.sub.id, NO_TERMS), plans) for w in windows]
    usage = _usage(conn, windows, watermark, from_counters)
    if scale:
        usage = [scaled(w.plan, u, scale[w.customer]) if w.customer in scale else u for w, u in zip(windows, usage)]
    seats = seat_histories(conn, [w.sub.id for w in windows])
    left = dict(grants) if grants is not None else grant_balances(conn, [w.customer for w in windows])
    out: list[RatedWindow | None] = [None] * len(windows)
    # each customer's windows in time order: credit drawn by one is gone for the next
    for i in sorted(range(len(windows)), key=lambda n: (windows[n].customer, windows[n].start, windows[n].sub.id)):
        window = windows[i]
        meters, cost = usage[i]
        balances = left.get(window.customer, ())
        history = seats.get(window.sub.id, [])
        invoice = _rate(conn, window, meters, cost, history, balances, watermark)
        if invoice.credits_used and balances:
            left[window.customer] = [(g, balance - to_micro(invoice.credits_used.get(g.id, ZERO)))
                                     for g, balance in balances]
        out[i] = RatedWindow(window, invoice, meters, history)
    return out


def _contracted(window: Window, terms: ContractTerms, plans: Callable[[str, int], Plan] | None) -> Window:
    """The window under its subscription's contract: the plan with the overrides in force at
    the window's start, the coupons, term commitments and add-ons that apply to it."""
    if terms is NO_TERMS:
        return window
    if terms.addons and plans is None:
        raise ValueError(f"subscription {window.sub.id} has add-ons: rating it needs the catalog (plans=)")
    return replace(window, plan=terms.plan_at(window.plan, window.start),
                   discounts=terms.discounts(window.start, window.end),
                   commitments=terms.commitments_in(window.start, window.end),
                   addons=terms.addons_in(window.start, window.end, plans) if terms.addons else ())


def _rate(conn: Connection, window: Window, meters: dict[str, MeterTotals], cost: Decimal, seats: SeatHistory,
          balances: Sequence[GrantBalance], watermark: int) -> RatedInvoice:
    plan, period, customer = window.plan, window.period, window.customer
    return rate_period(RatingInput(
        plan, customer, period, meters, seats, grant_inputs(balances, plan.currency) if balances else (),
        active_from=window.start if window.start > period.start else None,
        active_until=window.end if window.end < period.end else None,
        trial_end=window.sub.trial_end, provider_cost=cost,
        usage_before=usage_before_expiries(conn, plan, customer, period, window.start, window.rated_until,
                                           balances, watermark),
        discounts=window.discounts, commitments=window.commitments, addons=window.addons,
        part=window.part))


class UsageSpan(NamedTuple):
    """A customer's usage metered by ``plan`` over ``[start, until)``."""

    plan: Plan
    customer: str
    start: datetime
    until: datetime


def measure(conn: Connection, spans: Sequence[UsageSpan], watermark: int) -> list[Usage]:
    """Each span's usage from the events up to ``watermark``: one SQL aggregation per
    (plan object, start, until) for all the customers sharing it."""
    out: list[Usage] = [({}, ZERO)] * len(spans)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, span in enumerate(spans):  # by plan object: a contract's effective plan reads usage its own way
        groups[(id(span.plan), span.start, span.until)].append(i)
    for (_, start, until), members in groups.items():
        customers = sorted({spans[i].customer for i in members})
        totals, costs = aggregate_window(conn, spans[members[0]].plan, customers, to_us(start), to_us(until),
                                         watermark)
        for i in members:
            customer = spans[i].customer
            out[i] = (totals.get(customer, {}), costs.get(customer, ZERO))
    return out


def _usage(conn: Connection, windows: Sequence[Window], watermark: int,
           from_counters: Callable[[Window], Usage | None] | None) -> list[Usage]:
    """From the counters where ``from_counters`` finds them exact, else from the events."""
    counted = [from_counters(w) if from_counters is not None else None for w in windows]
    rest = [i for i, found in enumerate(counted) if found is None]
    measured = measure(conn, [UsageSpan(windows[i].plan, windows[i].customer, windows[i].start,
                                        windows[i].rated_until) for i in rest], watermark)
    for i, usage in zip(rest, measured):
        counted[i] = usage
    return counted


def scaled(plan: Plan, usage: Usage, k: Decimal) -> Usage:
    meters, cost = usage
    return {key: scaled_totals(plan, key, t, k) for key, t in meters.items()}, cost * k


# meters whose units do not grow with the time elapsed: a forecast keeps them as observed
AS_OBSERVED = ("max", "unique_count", "latest", "min", "avg")


def scaled_totals(plan: Plan, key: str, totals: MeterTotals, k: Decimal) -> MeterTotals:
    try:
        aggregation = plan.meter(key).aggregation
    except KeyError:
        aggregation = "count"
    if aggregation in AS_OBSERVED:
        return MeterTotals(totals.units, totals.events, totals.cost * k, totals.transactions, totals.groups)
    return MeterTotals(totals.units * k, int((totals.events * k).to_integral_value()), totals.cost * k,
                       totals.transactions,
                       tuple((v, u * k, c * k, int((n * k).to_integral_value())) for v, u, c, n in totals.groups))
