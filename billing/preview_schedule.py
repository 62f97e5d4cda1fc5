"""The invoices a customer receives in and at the end of one period, with no database
(``invoice preview`` for plans that bill advance fees at the period's start or cut
threshold invoices). Every amount comes from the rating engine (``rate_period`` with its
``part``) and the threshold arithmetic (``rating.thresholds``): the ledger's close cuts the
same documents from the same functions.

- ``start``: at the period's start, the advance fees for the period (flat fees, the seats
  held at its start), for plans with ``billing.advance_fees: at_period_start``.
- ``threshold``: for plans with ``invoice_when_due_reaches``, checked every ``check_every``
  from the period's start (the ledger checks on each ``invoice close``; the preview
  assumes one close a day by default): when the usage accrued since the last invoice
  reaches the threshold, an invoice for it.
- ``end``: at the period's end, the period's arrears (everything but its advance fees,
  less what threshold invoices billed), and, when the next period is known, the next
  period's advance fees for the seats held then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from billing.catalog.schema import Plan
from billing.events import UsageEvent
from billing.money import minor_units
from billing.rating.engine import RatingInput, rate_period
from billing.rating.meters import aggregate
from billing.rating.periods import Period, local_dates
from billing.rating.thresholds import Billed, accrued, reaches, taken_back
from billing.rating.types import InvoiceLine, LineKind, RatedInvoice

ZERO = Decimal(0)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Scheduled:
    issued_at: datetime
    when: str  # start | threshold | end
    invoice: RatedInvoice

    def to_json(self) -> dict:
        return {"issued_at": self.issued_at.isoformat().replace("+00:00", "Z"), "when": self.when,
                **self.invoice.to_json()}


def needs_schedule(plan: Plan) -> bool:
    """Whether the plan bills more than one invoice for a period."""
    return plan.billing.in_advance or plan.invoice_when_due_reaches is not None


def _document(plan: Plan, customer: str, period: Period, lines: Sequence[InvoiceLine],
              provider_cost: Decimal = ZERO) -> RatedInvoice:
    return RatedInvoice(customer=customer, currency=plan.currency, period_start=period.start,
                        period_end=period.end, plan=plan.plan, plan_version=plan.version, lines=tuple(lines),
                        total=sum((ln.amount for ln in lines), ZERO), provider_cost=provider_cost)


def _advance(plan: Plan, customer: str, period: Period, seats: Sequence[tuple[datetime, int]]) -> RatedInvoice:
    return rate_period(RatingInput(plan, customer, period, {}, seats, provider_cost=ZERO, part="advance"))


def _labelled(rated: RatedInvoice, period: Period, timezone: str) -> list[InvoiceLine]:
    label = f" (in advance: {local_dates(period.start, period.end, timezone).replace(' .. ', '..')})"
    return [InvoiceLine(ln.kind, ln.description + label, ln.quantity, ln.unit_price, ln.amount, ln.key, ln.meter,
                        ln.advance) for ln in rated.lines]


def schedule(plan: Plan, customer: str, period: Period, events: Sequence[UsageEvent],
             cost_of: Callable[[UsageEvent], Decimal], seats: Sequence[tuple[datetime, int]], *,
             next_period: Period | None = None, check_every: timedelta = DAY, timezone: str = "UTC") -> list[Scheduled]:
    """The customer's invoices for ``period`` in the order they are issued."""
    out: list[Scheduled] = []
    part = "arrears" if plan.billing.in_advance else "whole"
    if plan.billing.in_advance:
        rated = _advance(plan, customer, period, seats)
        out.append(Scheduled(period.start, "start", _document(plan, customer, period, _labelled(rated, period, timezone))))
    billed = Billed()
    threshold = plan.invoice_when_due_reaches
    t = period.start + check_every
    while threshold is not None and t < period.end:
        usage = aggregate(plan, events, period.start, t, cost_of)
        rated = rate_period(RatingInput(plan, customer, period, usage, seats, part=part))
        diffs, kinds, names = accrued(rated, billed)
        if reaches(diffs, threshold, plan.currency):
            q = Decimal(1).scaleb(-minor_units(plan.currency))
            label = t.isoformat().replace("+00:00", "Z")
            lines = [InvoiceLine(LineKind(kinds[k]), f"{names[k]} (to {label})", Decimal(1), None, Decimal(v) * q, k)
                     for k, v in diffs.items()]
            out.append(Scheduled(t, "threshold", _document(plan, customer, period, lines)))
            billed.add(diffs, kinds, names)
        t += check_every
    usage = aggregate(plan, events, period.start, period.end, cost_of)
    cost = sum((cost_of(e) for e in events if period.contains(e.timestamp)), ZERO)
    rated = rate_period(RatingInput(plan, customer, period, usage, seats, provider_cost=cost, part=part))
    lines = [*rated.lines, *taken_back(billed, plan.currency)]
    if plan.billing.in_advance and next_period is not None:
        lines.extend(_labelled(_advance(plan, customer, next_period, seats), next_period, timezone))
    closing = _document(plan, customer, period, lines, cost)
    out.append(Scheduled(period.end, "end", closing))
    return out
