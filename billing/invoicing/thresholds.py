"""Threshold invoicing: a plan's ``invoice_when_due_reaches`` cuts an invoice whenever the
usage amount accrued since the period's last invoice reaches it.

A customer's own threshold (``customer.invoice_when_due_reaches``, set with ``billing
customers threshold``) overrides its plans'.

When: every close evaluates it, inside its transaction (after the close lock, on the
close's snapshot watermark, after the periods it closes), for each subscription whose plan
(or customer) sets a threshold and whose window holds ``as_of`` strictly inside it. Nothing happens at
ingestion (the hot path stays as it is): run ``billing invoice close --as-of <now>`` as
often as thresholds should be noticed (a worker every few minutes).

What is accrued: the window rated to ``as_of`` by the one window-rating service
(``invoicing.windows``, ``rated_until``), its usage, cap and credit lines per key (fees and
the commitment true-up are the closing invoice's), less what the period's earlier threshold
invoices billed per key. Credit a grant gave the earlier invoices is given back to the
rating (it rates the period from its start), as the late-event re-rating does. When the
sum reaches the threshold, the invoice bills each key's difference (each already rounded:
lines are rounded once by the engine), with the window as the lines' service period.

The period's closing invoice rates the whole window (with the credit the threshold invoices
drew given back) and subtracts, per key, what they billed ("invoiced on threshold
invoices" lines): the period's invoices together bill exactly its one invoice, to the cent
(negative when a volume tier made usage cheaper after a cut). Late events after the close
re-rate the service period against every line billed for it, threshold lines included.

Idempotent and safe concurrently: the cut happens under the close lock, reads the earlier
threshold invoices first, and is keyed ``thr:<subscription>:<period start>:<n>`` (unique):
a second run (or a retried one) sees the first's invoice and finds nothing accrued.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, select

from billing.catalog import Plan
from billing.invoicing.documents import doc_base, invoice_key, minor, threshold_key, threshold_prefix
from billing.invoicing.lifecycle import BILLED_STATUSES
from billing.invoicing.windows import Window, rate_windows
from billing.ledger.counters import to_micro
from billing.money import from_minor, minor_units
from billing.rating.periods import Period
from billing.rating.thresholds import Billed, accrued, reaches, taken_back
from billing.rating.types import LineKind
from billing.store.grants_and_seats import GrantBalance, grant_balances
from billing.store.models import Invoice, InvoiceLineRow


def threshold_of(plan: Plan, customer_id: str, overrides: dict[str, Decimal]) -> Decimal | None:
    """The customer's own threshold (``billing customers threshold``), else its plan's."""
    return overrides.get(customer_id, plan.invoice_when_due_reaches)


def billed_on_thresholds(conn: Connection, subscription_id: int, period: Period, start: datetime,
                         end: datetime) -> Billed:
    """The threshold invoices of the subscription's window (any status that stays billed)."""
    prefix = threshold_prefix(subscription_id, period)
    rows = conn.execute(
        select(Invoice.id, InvoiceLineRow.key, InvoiceLineRow.kind, InvoiceLineRow.description,
               InvoiceLineRow.amount_minor)
        .join(InvoiceLineRow, InvoiceLineRow.invoice_id == Invoice.id, isouter=True)
        .where(Invoice.subscription_id == subscription_id, Invoice.dedupe_key.startswith(prefix),
               Invoice.status.in_(BILLED_STATUSES)))
    amounts: dict[str, int] = defaultdict(int)
    kinds: dict[str, str] = {}
    names: dict[str, str] = {}
    for _, key, kind, description, amount in rows:
        if key is None:
            continue
        amounts[key] += amount
        kinds.setdefault(key, kind)
        names.setdefault(key, description.split(" (to ")[0])
    return Billed(dict(amounts), kinds, names, _count_documents(conn, prefix))


def _count_documents(conn: Connection, prefix: str) -> int:
    """Every threshold invoice of the window, whatever its status (numbers its key)."""
    return len(conn.execute(select(Invoice.id).where(Invoice.dedupe_key.startswith(prefix))).all())


def given_back(balances: list[GrantBalance], billed: Billed, currency: str,
               drawn_now: dict[str, int] | None = None) -> list[GrantBalance]:
    """The grants with what the window's threshold invoices drew given back (the window is
    rated from its start), less what this run drew already (micro-units)."""
    scale = 10 ** (6 - minor_units(currency))
    drawn_now = drawn_now or {}
    return [(g, bal - drawn_now.get(g.id, 0) - billed.amounts.get(g.id, 0) * scale) for g, bal in balances]


def open_windows(conn: Connection, subs: Sequence, plan_of: Callable, cycle_of: Callable, as_of: datetime,
                 overrides: dict[str, Decimal]) -> list[tuple]:
    """(subscription, plan, period, window start, window end, threshold) of each subscription
    whose plan or customer sets a threshold and whose window holds ``as_of`` strictly inside
    it, unless the period is closed already (a close ``as_of`` an earlier instant than one
    before it)."""
    from billing.invoicing.repository import invoice_keys

    out = []
    for sub in subs:
        plan = plan_of(sub)
        threshold = threshold_of(plan, sub.customer_id, overrides)
        if threshold is None or (sub.ended_at is not None and sub.ended_at <= as_of):
            continue
        period = cycle_of(sub, plan).period_containing(as_of)
        start = max(period.start, sub.started_at)
        end = min(period.end, sub.ended_at) if sub.ended_at else period.end
        if start < as_of < end:
            out.append((sub, plan, period, start, end, threshold))
    closed = invoice_keys(conn, [sub.id for sub, *_ in out]) if out else set()
    return [w for w in out if invoice_key(w[0].id, w[2]) not in closed]


def closing_grants(conn: Connection, jobs: Sequence) -> dict | None:
    """For the windows a close is closing (``jobs``: sub, plan, period, window_start,
    window_end): reads what each one's threshold invoices billed into ``job.billed``
    (whatever its plan or customer says now); when they drew grant credit, returns the grant
    balances with it given back (the window is rated from its start), else None (the
    rating reads the balances itself)."""
    from billing.invoicing.repository import threshold_invoiced

    cut = threshold_invoiced(conn, [j.sub.id for j in jobs])
    for job in jobs:
        if (job.sub.id, threshold_prefix(job.sub.id, job.period)) in cut:
            billed = billed_on_thresholds(conn, job.sub.id, job.period, job.window_start, job.window_end)
            job.billed = billed if billed.amounts else None
    drew = [j for j in jobs if j.billed is not None and any(
        j.billed.kinds[k] == LineKind.CREDIT and not k.startswith("plan:") for k in j.billed.amounts)]
    if not drew:
        return None
    balances = grant_balances(conn, sorted({j.sub.customer_id for j in jobs}))
    for job in drew:
        balances[job.sub.customer_id] = given_back(balances.get(job.sub.customer_id, []), job.billed,
                                                   job.plan.currency)
    return balances


@dataclass
class ThresholdCut:
    doc: dict
    lines: list[dict]
    burns: dict[str, Decimal]  # grant id -> credit drawn (currency units)


def cut_thresholds(conn: Connection, candidates: list[tuple], as_of: datetime, watermark: int, now: datetime,
                   drawn_now: dict[str, int]) -> list[ThresholdCut]:
    """``candidates``: (subscription, plan, period, window start, window end, threshold) with
    ``as_of`` inside the window. One threshold invoice per window whose accrued amount reaches its
    plan's threshold; ``drawn_now`` (grant -> micro-units drawn by this run's other
    invoices) is kept up to date."""
    cuts: list[ThresholdCut] = []
    if not candidates:
        return cuts
    balances = grant_balances(conn, sorted({sub.customer_id for sub, *_ in candidates}))
    for sub, plan, period, start, end, threshold in candidates:
        billed = billed_on_thresholds(conn, sub.id, period, start, end)
        grants = given_back(balances.get(sub.customer_id, []), billed, plan.currency, drawn_now)
        window = Window(sub, plan, period, start, end, as_of, "arrears" if plan.billing.in_advance else "whole")
        rated = rate_windows(conn, [window], watermark, grants={sub.customer_id: grants})[0].invoice
        diffs, kinds, names = accrued(rated, billed)
        if not reaches(diffs, threshold, plan.currency):
            continue
        due = sum(diffs.values())
        label = as_of.isoformat().replace("+00:00", "Z")
        lines = [{"position": pos, "kind": kinds[k], "key": k, "description": f"{names[k]} (to {label})"[:500],
                  "quantity": "1", "unit_price": None, "amount_minor": v, "service_start": start,
                  "service_end": end} for pos, (k, v) in enumerate(diffs.items())]
        doc = {**doc_base(sub, plan, start, end, now, watermark),
               "dedupe_key": threshold_key(sub.id, period, billed.invoices + 1), "total_minor": due}
        burns = {k: -from_minor(v, plan.currency) for k, v in diffs.items()
                 if kinds[k] == LineKind.CREDIT and not k.startswith("plan:")}
        for k, v in burns.items():
            drawn_now[k] = drawn_now.get(k, 0) + to_micro(v)
        cuts.append(ThresholdCut(doc, lines, burns))
    return cuts


def closing_lines(billed: Billed, currency: str, start: datetime, end: datetime) -> list[dict]:
    """The closing invoice's rows taking back, per key, what threshold invoices billed
    (``rating.thresholds.taken_back``), over the window."""
    return [{"kind": str(ln.kind), "key": ln.key, "description": ln.description[:500], "quantity": "1",
             "unit_price": None, "amount_minor": minor(ln.amount, currency), "service_start": start,
             "service_end": end} for ln in taken_back(billed, currency)]


def closing_burns(credits_used: dict[str, Decimal], billed: Billed, currency: str) -> dict[str, Decimal]:
    """The closing invoice's credit drawn: the whole window's, less the threshold invoices'."""
    out = dict(credits_used)
    for key, amount in billed.amounts.items():
        if billed.kinds.get(key) == LineKind.CREDIT and not key.startswith("plan:"):
            out[key] = out.get(key, Decimal(0)) + from_minor(amount, currency)  # amount is negative
    return {k: v for k, v in out.items() if v}
