"""Advance fees invoiced when their period starts (plans with ``billing.advance_fees:
at_period_start``), the way Stripe, ChatGPT Team and Claude Team bill seats.

Each window of such a subscription is rated in two parts by the one rating entry point
(``rating.engine.rate_period``, ``RatingInput.part``), which partition its whole invoice:

- the *advance* part: the flat fees and the seats held at the window's start, for the
  whole window (``timing: advance``). It is rated when the window starts, from what is
  known then (the seat count at its start, a cancellation already recorded), and never
  re-rated: a cancellation recorded later refunds nothing, and no seat change may take
  effect at or before an invoiced window's start (``ledger.accounts``, ``period_invoiced``);
- the *arrears* part: usage, overage, caps, credits, seats added during the window
  (prorated over their remaining time; with ``on_decrease: credit_unused`` the unused time
  of removed seats, credited), arrears-timed fees and the commitment true-up. It is rated
  when the window ends, like any closed period, and is what late events re-rate.

Documents: the subscription's first window gets an *opening* invoice (key
``adv:<subscription>:<period start>``) with its advance part only, cut by the first close
whose ``as_of`` reaches the subscription's start. Each later window's advance part rides on
the invoice that closes the window before it (``inv:`` key, period columns = the closed
window): that invoice bills the closed window's arrears and the next window's advance
fees, each line with its own service period, the advance lines flagged
``billed_in_advance``. The final invoice of an ended subscription (its last window) has no
next window: it settles arrears only. Re-running a close is idempotent through those keys:
an opening invoice exists once per subscription, and each window's advance part is on the
one invoice that closed the window before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection

from billing.catalog import Plan
from billing.invoicing.documents import line_rows
from billing.rating.engine import RatingInput, rate_period
from billing.rating.periods import BillingCycle, Period, local_dates
from billing.rating.types import RatedInvoice
from billing.store.grants_and_seats import seat_histories

ZERO = Decimal(0)


@dataclass(frozen=True)
class AdvanceWindow:
    """A subscription's window whose advance fees are invoiced now."""

    sub: object
    plan: Plan
    period: Period
    start: datetime
    end: datetime
    timezone: str = "UTC"  # the customer's: the dates its lines name


def window_in(sub, plan: Plan, period: Period, timezone: str = "UTC") -> AdvanceWindow | None:
    """The subscription's part of ``period`` (None: it holds none of it)."""
    start = max(period.start, sub.started_at)
    end = min(period.end, sub.ended_at) if sub.ended_at else period.end
    return AdvanceWindow(sub, plan, period, start, end, timezone) if start < end else None


def next_window(sub, plan: Plan, period: Period, cycle: BillingCycle) -> AdvanceWindow | None:
    """The subscription's window in the period after ``period``, if it reaches it."""
    if sub.ended_at is not None and sub.ended_at <= period.end:
        return None
    return window_in(sub, plan, cycle.next_period(period), cycle.timezone)


def opening_windows(subs: Sequence, plan_of: Callable, cycle_of: Callable, as_of: datetime,
                    existing_keys: set[str]) -> list[AdvanceWindow]:
    """The first window of every advance-billed subscription that started by ``as_of`` and
    has no opening invoice yet, while that window is not closed (a window with no advance
    fee to bill, all in trial, gets no opening invoice)."""
    from billing.invoicing.documents import invoice_key, opening_key

    out = []
    for sub in subs:
        plan = plan_of(sub)
        if not plan.billing.in_advance or sub.started_at > as_of:
            continue
        cycle = cycle_of(sub, plan)
        first = window_in(sub, plan, cycle.period_containing(sub.started_at), cycle.timezone)
        if first is not None and opening_key(sub.id, first.period) not in existing_keys \
                and invoice_key(sub.id, first.period) not in existing_keys:
            out.append(first)
    return out


def rate_advance(conn: Connection, windows: Sequence[AdvanceWindow]) -> list[RatedInvoice]:
    """Each window's advance part, from the seat history as it is now (in ``windows`` order)."""
    if not windows:
        return []
    seats = seat_histories(conn, [w.sub.id for w in windows])
    out = []
    for w in windows:
        period = w.period
        out.append(rate_period(RatingInput(
            w.plan, w.sub.customer_id, period, {}, seats.get(w.sub.id, []),
            active_from=w.start if w.start > period.start else None,
            active_until=w.end if w.end < period.end else None,
            trial_end=w.sub.trial_end, provider_cost=ZERO, part="advance")))
    return out


def advance_rows(window: AdvanceWindow, rated: RatedInvoice) -> list[dict]:
    """The advance part's line rows: service period the window ahead, ``billed_in_advance``,
    the description naming the window (an invoice may hold two windows' lines)."""
    rows = line_rows(rated, window.start, window.end, in_advance=True)
    label = f" (in advance: {local_dates(window.start, window.end, window.timezone).replace(' .. ', '..')})"
    for row in rows:
        row["description"] = (row["description"] + label)[:500]
    return rows


def opening_doc(window: AdvanceWindow, rated: RatedInvoice, now: datetime, watermark: int) -> tuple[dict, list[dict]]:
    """A subscription's opening invoice (its first window's advance fees) and its lines."""
    from billing.invoicing.documents import doc_base, opening_key

    lines = advance_rows(window, rated)
    for pos, row in enumerate(lines):
        row["position"] = pos
    doc = {**doc_base(window.sub, window.plan, window.start, window.end, now, watermark),
           "dedupe_key": opening_key(window.sub.id, window.period),
           "total_minor": sum(r["amount_minor"] for r in lines)}
    return doc, lines


def openings(conn: Connection, subs: Sequence, plan_of: Callable, cycle_of: Callable, as_of: datetime,
             now: datetime, watermark: int) -> list[tuple[dict, list[dict]]]:
    """The opening invoice (document, lines) of every advance-billed subscription that
    started by ``as_of`` without one."""
    from billing.invoicing.repository import invoice_keys

    mine = [s for s in subs if plan_of(s).billing.in_advance]
    if not mine:
        return []
    windows = opening_windows(mine, plan_of, cycle_of, as_of, invoice_keys(conn, [s.id for s in mine]))
    return [opening_doc(w, rated, now, watermark) for w, rated in zip(windows, rate_advance(conn, windows))
            if rated.lines]


def rate_ahead(conn: Connection, jobs: Sequence, cycle_of: Callable) -> None:
    """Each closed window of an advance-billed subscription also bills the next window's
    advance fees (none after its last window): sets ``job.ahead`` and ``job.ahead_rated``."""
    ahead = []
    for job in jobs:
        if job.plan.billing.in_advance:
            job.ahead = next_window(job.sub, job.plan, job.period, cycle_of(job))
            if job.ahead is not None:
                ahead.append(job)
    for job, rated in zip(ahead, rate_advance(conn, [j.ahead for j in ahead])):
        job.ahead_rated = rated
