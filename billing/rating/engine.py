"""Rate one subscription period: plan + usage in, an exact invoice out. Pure.

Order of lines: recurring fees (the plan's, then each add-on subscription's), usage
charges (with spend caps), the plan-wide spend cap, discounts (coupons), prepaid credits,
the commitment true-ups (the plan's minimum, then term commitments): the order
``arithmetic`` owns (its "contracts on the plan"). Each line is rounded once
(``money.round_line``); the total is the exact sum of the rounded lines. Every amount of
a usage charge and every plan-wide rule on them comes from ``billing.rating.arithmetic``
(a charge is rounded once; its lines are that amount's breakdown); this module lays the
lines out.

Rules worth knowing (see README "Rating rules"):
- Proration is by exact elapsed time (``periods.prorate_fraction``).
- Flat fees are prorated to the part of the period the subscription is active and out
  of trial. Seat fees: ``advance`` bills the seats held at the start of the billable
  window for the whole window plus increases prorated over their remaining time
  (decreases wait for the next period, or with ``on_decrease: credit_unused`` credit the
  removed seats' remaining time); ``arrears`` bills the exact time-weighted seats.
- ``RatingInput.part`` splits one invoice in two: the advance fees' lines (flat fees and
  the seats held at the window's start, ``timing: advance``) and everything else; a plan
  billing advance fees at the period's start invoices the two parts at different times
  (``billing.invoicing.advance``).
- Included usage per seat uses the most seats held during the period.
- Credits apply to usage charges (never to fees), soonest-expiring grant first; a grant
  that expires inside the period covers only the usage charged before its expiry
  (``RatingInput.usage_before``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from billing.catalog.compiled import CompiledCharge, CompiledPlan
from billing.catalog.schema import FlatFee, Plan, SeatFee
from billing.money import dec_str, round_line
from billing.rating import arithmetic
from billing.rating.periods import Period, prorate_fraction, seat_segments
from billing.rating.types import (
    AddOn, ChargeUsage, CreditGrant, Discount, InvoiceLine, LineKind, MeterTotals, RatedInvoice, TermCommitment)

ZERO = Decimal(0)
ONE = Decimal(1)
_NO_USAGE = MeterTotals()


@dataclass(frozen=True)
class RatingInput:
    plan: Plan
    customer: str
    period: Period
    usage: Mapping[str, MeterTotals]
    seat_changes: Sequence[tuple[datetime, int]] = ()  # empty: one seat throughout
    grants: Sequence[CreditGrant] = ()
    active_from: datetime | None = None  # subscription start, if inside the period
    active_until: datetime | None = None  # cancellation or plan change, if inside
    trial_end: datetime | None = None
    provider_cost: Decimal | None = None  # all the period's events; None: of the metered events
    # usage over [period.start, t) for instants t at which a grant expires inside the period:
    # such a grant then covers only the usage charged before it expired. A grant whose expiry
    # is missing here covers the whole period's usage (it was in force during the period).
    usage_before: Mapping[datetime, Mapping[str, MeterTotals]] = field(default_factory=dict)
    discounts: Sequence[Discount] = ()  # coupons applying to this window, in redemption order
    commitments: Sequence[TermCommitment] = ()  # term commitments: each window owes its share
    addons: Sequence[AddOn] = ()  # add-on subscriptions rated into this invoice (their fees)
    # which lines: ``whole`` every line; ``advance`` only the advance fees' lines
    # (``InvoiceLine.advance``: flat fees and the seats held at the window's start, with
    # ``timing: advance``); ``arrears`` every other line. The two parts of one input
    # partition its whole invoice: they add up to it exactly, line by line.
    part: Literal["whole", "advance", "arrears"] = "whole"


class _Lines:
    """The invoice's lines so far, with running totals by kind and by (kind, key)."""

    def __init__(self, currency: str):
        self.currency = currency
        self.items: list[InvoiceLine] = []
        self._all = ZERO
        self._by_kind: dict[LineKind, Decimal] = {}
        self._by_kind_key: dict[tuple[LineKind, str], Decimal] = {}

    def add(self, kind: LineKind, description: str, quantity: Decimal, unit_price: Decimal | None,
            amount: Decimal, key: str = "", meter: str | None = None, advance: bool = False) -> InvoiceLine:
        rounded = round_line(amount, self.currency)
        line = InvoiceLine(kind, description, quantity, unit_price, rounded, key, meter, advance)
        self.items.append(line)
        self._all += rounded
        self._by_kind[kind] = self._by_kind.get(kind, ZERO) + rounded
        self._by_kind_key[(kind, key)] = self._by_kind_key.get((kind, key), ZERO) + rounded
        return line

    def total(self, *kinds: LineKind, key: str | None = None) -> Decimal:
        """Sum of the (rounded) lines of these kinds (all kinds when none), of ``key`` if given."""
        total = ZERO
        if key is None:
            if not kinds:
                return self._all
            get = self._by_kind.get
            for kind in kinds:
                total += get(kind, ZERO)
            return total
        if not kinds:
            return sum((v for (_, ky), v in self._by_kind_key.items() if ky == key), ZERO)
        get = self._by_kind_key.get
        for kind in kinds:
            total += get((kind, key), ZERO)
        return total


def rate_period(inp: RatingInput) -> RatedInvoice:
    plan, period = inp.plan, inp.period
    compiled = plan.compiled
    lines = _Lines(plan.currency)
    window_start = max(period.start, inp.active_from or period.start)
    window_end = min(period.end, inp.active_until or period.end)
    paid_start = max(window_start, inp.trial_end) if inp.trial_end else window_start
    changes = list(inp.seat_changes) or [(period.start, 1)]
    segments = seat_segments(changes, period)
    max_seats = Decimal(max((s.seats for s in segments), default=0))

    for fee in plan.fees:
        if isinstance(fee, FlatFee):
            _flat_fee(lines, fee, period, paid_start, window_end)
        else:
            _seat_fee(lines, fee, period, paid_start, window_end, changes, segments)
    for addon in inp.addons:  # add-on subscriptions: their fees over their part of the window
        start = max(window_start, addon.active_from)
        end = min(window_end, addon.active_until) if addon.active_until else window_end
        for fee in addon.fees:
            fee = fee.model_copy(update={"key": f"{addon.id}:{fee.key}",
                                         "name": f"{addon.name}: {fee.name or fee.key}"})
            if isinstance(fee, FlatFee):
                _flat_fee(lines, fee, period, start, end)
            else:
                _seat_fee(lines, fee, period, start, end, changes, segments)

    usage_summaries = [_usage_charge(lines, charge, inp.usage.get(charge.meter, _NO_USAGE), max_seats,
                                     arithmetic.capacity_peaks(charge, inp.usage))
                       for charge in compiled.charges]

    usage_total = lines.total(LineKind.USAGE, LineKind.CAP)
    cap_line = arithmetic.plan_cap_line(compiled, usage_total)
    if cap_line:
        lines.add(LineKind.CAP, f"Spend cap {compiled.spend_cap_line} {plan.currency} reached", ONE, None, cap_line,
                  "spend_cap")

    # the plan-wide rules, in the order ``arithmetic`` owns: discounts, credits, true-ups
    before_credits = lines.total()
    usage_charged = lines.total(LineKind.USAGE, LineKind.CAP)
    if inp.discounts:
        offs = arithmetic.discounts(inp.discounts, before_credits, usage_charged, plan.currency)
        for d, (key, off) in zip(inp.discounts, offs):
            if off:
                lines.add(LineKind.DISCOUNT, d.name, ONE, None, -off, key)
    credits_used = _apply_credits(lines, compiled, inp, max_seats)

    minimums: list[tuple[str, Decimal, str]] = []
    names = {"minimum_commitment": "Minimum commitment true-up"}
    if plan.minimum_commitment is not None:
        fraction = prorate_fraction(window_start, window_end, period) if window_end > window_start else ZERO
        minimums.append(("minimum_commitment", round_line(plan.minimum_commitment.amount * fraction, plan.currency),
                         plan.minimum_commitment.applies_to))
    for term in inp.commitments:
        minimums.append((term.id, arithmetic.term_minimum(term, window_start, window_end, plan.currency),
                         term.applies_to))
        names[term.id] = f"{term.name} true-up"
    for key, true_up in arithmetic.true_ups(minimums, before_credits, usage_charged):
        if true_up:
            lines.add(LineKind.COMMITMENT, names[key], ONE, None, true_up, key)

    cost = inp.provider_cost
    if cost is None:
        cost = _metered_cost(plan, inp.usage)
    kept, total = tuple(lines.items), lines.total()
    if inp.part != "whole":
        ahead = inp.part == "advance"
        kept = tuple(ln for ln in kept if ln.advance == ahead)
        total = sum((ln.amount for ln in kept), ZERO)
        if ahead:  # the advance part bills no usage: it draws no credit and costs nothing
            credits_used, cost, usage_summaries = {}, ZERO, []
    return RatedInvoice(
        customer=inp.customer, currency=plan.currency, period_start=period.start, period_end=period.end,
        plan=plan.plan, plan_version=plan.version, lines=kept, total=total,
        provider_cost=cost, credits_used=credits_used,
        usage=tuple(usage_summaries),
    )


def _metered_cost(plan: Plan, usage: Mapping[str, MeterTotals]) -> Decimal:
    """Provider cost of the metered events when the caller did not pass it, counting each
    event once although several meters may see it (input and output token meters both sum
    ``llm.call``): per event type, an unfiltered meter without disputes sees every event of
    the type; otherwise each distinct filter counts once (overlapping filters would still
    double count: callers that know the period's events pass ``provider_cost``)."""
    total = ZERO
    for meters in plan.compiled.meters_by_event_type.values():
        whole = [m for m in meters if not m.filter and m.disputes is None]
        chosen = whole[:1] or list({(repr(sorted(m.filter.items())), repr(m.disputes)): m
                                    for m in reversed(meters)}.values())
        total += sum((usage.get(m.key, MeterTotals()).cost for m in chosen), ZERO)
    return total


def _flat_fee(lines: _Lines, fee: FlatFee, period: Period, start: datetime, end: datetime) -> None:
    if end <= start:
        return
    fraction = prorate_fraction(start, end, period)
    name = fee.name or fee.key
    note = "" if fraction == ONE else f" (prorated {_pct(fraction)} of the period)"
    lines.add(LineKind.FEE, f"{name}{note}", _q(fraction), fee.amount, fee.amount * fraction, fee.key,
              advance=fee.timing == "advance")


def _seat_fee(lines: _Lines, fee: SeatFee, period: Period, start: datetime, end: datetime,
              changes: list[tuple[datetime, int]], period_segments: list) -> None:
    if end <= start:
        return
    name = fee.name or fee.key
    if (start, end) == (period.start, period.end):  # the whole period: its segments
        segments = period_segments
    else:
        segments = [s for s in seat_segments(changes, Period(start, end)) if s.end > s.start]
    if fee.timing == "arrears":
        seat_time = sum((max(s.seats, fee.min_seats) * prorate_fraction(s.start, s.end, period)
                         for s in segments), ZERO)
        lines.add(LineKind.FEE, f"{name} (time-weighted seats)", _q(seat_time), fee.unit_price,
                  seat_time * fee.unit_price, fee.key)
        return
    held = max(segments[0].seats if segments else 0, fee.min_seats)
    fraction = prorate_fraction(start, end, period)
    note = "" if fraction == ONE else f", prorated {_pct(fraction)}"
    lines.add(LineKind.FEE, f"{name} ({held} seats{note})", Decimal(held) * _q(fraction), fee.unit_price,
              held * fraction * fee.unit_price, fee.key, advance=True)
    refunds = fee.on_decrease == "credit_unused"
    for seg in segments[1:]:
        seats = max(seg.seats, fee.min_seats)
        if seats > held:
            added = seats - held
            part = prorate_fraction(seg.start, end, period)
            lines.add(LineKind.FEE,
                      f"{name}: {added} seat(s) added {seg.start.date().isoformat()}, prorated {_pct(part)}",
                      added * _q(part), fee.unit_price, added * part * fee.unit_price, fee.key)
            held = seats
        elif seats < held and refunds:  # the removed seats' unused time, credited
            removed = held - seats
            part = prorate_fraction(seg.start, end, period)
            lines.add(LineKind.FEE,
                      f"{name}: {removed} seat(s) removed {seg.start.date().isoformat()}, unused {_pct(part)} "
                      f"credited", -removed * _q(part), fee.unit_price, -removed * part * fee.unit_price, fee.key)
            held = seats


def _usage_charge(lines: _Lines, charge: CompiledCharge, totals: MeterTotals, seats: Decimal,
                  peaks: tuple[Decimal, ...]) -> ChargeUsage:
    """The charge's lines: the included units (a zero line), then its amount's breakdown
    (``arithmetic.breakdown``: parts adding up exactly to the once-rounded amount), then
    the cap line when its spend cap cuts it."""
    name = charge.name
    included = arithmetic.included_units(charge, seats)
    detail = arithmetic.breakdown(charge, lines.currency, totals.units, totals.cost, totals.events,
                                  totals.transactions, included, peaks, groups=totals.groups)
    if charge.included is not None:
        lines.add(LineKind.USAGE, f"{name}: {dec_str(totals.units)} used, {dec_str(included)} included",
                  min(totals.units, included), ZERO, ZERO, charge.key, charge.meter)
    if charge.slow_price is not None:
        lane = f" on {charge.policy.model}" if charge.policy.model else ""
        for part, share in zip(detail.parts, detail.shares):
            lines.add(LineKind.USAGE, f"{name}: {part.label}{lane}", part.quantity, part.unit_price, share,
                      charge.key, charge.meter)
    elif charge.price is not None:
        parts = list(zip(detail.parts, detail.shares))
        if not parts and charge.included is None:
            lines.add(LineKind.USAGE, name, totals.units, charge.unit_price, ZERO, charge.key, charge.meter)
        for part, share in parts:
            label = f"{name} ({part.label})" if part.label else name
            lines.add(LineKind.USAGE, label, part.quantity, part.unit_price, share, charge.key, charge.meter)
        if detail.cap_line:
            lines.add(LineKind.CAP, f"{name}: spend cap {charge.cap_line} reached", ONE, None, detail.cap_line,
                      charge.key, charge.meter)
    return ChargeUsage(charge.key, charge.meter, totals.units, included, detail.usage.units, totals.cost,
                       detail.billed)


def _apply_credits(lines: _Lines, plan: CompiledPlan, inp: RatingInput, seats: Decimal) -> dict[str, Decimal]:
    """Draw credits against usage charges (``arithmetic.draw_credits``), soonest-expiring
    grant first. A grant that expires inside the period draws only on usage charged before
    its expiry (when ``inp.usage_before`` has the usage up to that instant)."""
    if not inp.grants and not plan.plan.credits:
        return {}
    grants = [*inp.grants, *arithmetic.recurring_credits(plan, seats, inp.period.start, inp.period.end)]
    usable = arithmetic.usable_grants(grants, inp.period.start, inp.period.end)
    charged = {c.key: lines.total(LineKind.USAGE, LineKind.CAP, key=c.key) for c in plan.charges}
    pool = arithmetic.credit_pool(usable, plan.currency)
    draws = arithmetic.draw_credits(
        [(gid, balance, applies, _charged_before(plan, inp, g.expires_at, seats))
         for (gid, balance, applies), g in zip(pool, usable)],
        charged, arithmetic.credit_room(lines.total(LineKind.CAP, key="spend_cap"),
                                        lines.total(LineKind.USAGE, LineKind.CAP), lines.total()))
    if draws:
        names = {g.id: g.name for g in usable}
        for grant_id, drawn in draws:
            lines.add(LineKind.CREDIT, f"{names[grant_id]} applied", ONE, None, -drawn, grant_id)
    return dict(draws)


def _charged_before(plan: CompiledPlan, inp: RatingInput, t: datetime | None, seats: Decimal) -> dict[str, Decimal] | None:
    """What each usage charge billed (caps included) on the usage before ``t``; None when
    ``t`` is not inside the period or its usage was not given."""
    if t is None or not inp.period.start < t < inp.period.end or t not in inp.usage_before:
        return None
    usage = inp.usage_before[t]
    out = {}
    for c in plan.charges:
        totals = usage.get(c.meter, _NO_USAGE)
        out[c.key] = arithmetic.charge_spend(c, plan.currency, totals.units, totals.cost, totals.events,
                                             totals.transactions, arithmetic.included_units(c, seats),
                                             arithmetic.capacity_peaks(c, usage), groups=totals.groups)
    return out


def _q(value: Decimal) -> Decimal:
    """Display quantity: at most 6 decimals (amounts use the exact value)."""
    return value.quantize(Decimal("0.000001")).normalize() if value != value.to_integral_value() else value


def _pct(fraction: Decimal) -> str:
    return f"{(fraction * 100).quantize(Decimal('0.01'))}%"
