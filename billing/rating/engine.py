"""Rate one subscription period: plan + usage in, an exact invoice out. Pure.

Order of lines: recurring fees, usage charges (with spend caps), the plan-wide spend
cap, prepaid credits, the minimum-commitment true-up. Each line is rounded once
(``money.round_line``); the total is the exact sum of the rounded lines.

Rules worth knowing (see README "Rating rules"):
- Proration is by exact elapsed time (``periods.prorate_fraction``).
- Flat fees are prorated to the part of the period the subscription is active and out
  of trial. Seat fees: ``advance`` bills the seats held at the start of the billable
  window for the whole window plus increases prorated over their remaining time
  (decreases wait for the next period); ``arrears`` bills the exact time-weighted seats.
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

from billing.catalog.schema import FlatFee, Plan, SeatFee, SlowTierPolicy, UsageCharge
from billing.money import dec_str, round_line
from billing.rating.charges import price_parts
from billing.rating.periods import Period, prorate_fraction, seat_segments
from billing.rating.types import (
    Billable, ChargeUsage, CreditGrant, InvoiceLine, MeterTotals, Part, RatedInvoice)

ZERO = Decimal(0)
ONE = Decimal(1)


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


class _Lines:
    """The invoice's lines so far, with running totals by kind and by (kind, key)."""

    def __init__(self, currency: str):
        self.currency = currency
        self.items: list[InvoiceLine] = []
        self._all = ZERO
        self._by_kind: dict[str, Decimal] = {}
        self._by_kind_key: dict[tuple[str, str], Decimal] = {}

    def add(self, kind: str, description: str, quantity: Decimal, unit_price: Decimal | None,
            amount: Decimal, key: str = "", meter: str | None = None) -> InvoiceLine:
        rounded = round_line(amount, self.currency)
        line = InvoiceLine(kind, description, quantity, unit_price, rounded, key, meter)
        self.items.append(line)
        self._all += rounded
        self._by_kind[kind] = self._by_kind.get(kind, ZERO) + rounded
        self._by_kind_key[(kind, key)] = self._by_kind_key.get((kind, key), ZERO) + rounded
        return line

    def total(self, *kinds: str, key: str | None = None) -> Decimal:
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

    usage_summaries = [_usage_charge(lines, charge, inp.usage.get(charge.meter, MeterTotals()), max_seats)
                       for charge in plan.charges]

    usage_total = lines.total("usage", "cap")
    if plan.spend_cap is not None and usage_total > round_line(plan.spend_cap, plan.currency):
        cap = round_line(plan.spend_cap, plan.currency)
        lines.add("cap", f"Spend cap {cap} {plan.currency} reached", ONE, None, cap - usage_total, "spend_cap")

    before_credits = lines.total()
    credits_used = _apply_credits(lines, plan, inp, max_seats)

    if plan.minimum_commitment is not None:
        fraction = prorate_fraction(window_start, window_end, period) if window_end > window_start else ZERO
        minimum = plan.minimum_commitment.amount * fraction
        base = before_credits if plan.minimum_commitment.applies_to == "all" else lines.total("usage", "cap")
        if round_line(minimum, plan.currency) > base:
            lines.add("commitment", "Minimum commitment true-up", ONE, None,
                      round_line(minimum, plan.currency) - base, "minimum_commitment")

    cost = inp.provider_cost
    if cost is None:
        cost = _metered_cost(plan, inp.usage)
    return RatedInvoice(
        customer=inp.customer, currency=plan.currency, period_start=period.start, period_end=period.end,
        plan=plan.plan, plan_version=plan.version, lines=tuple(lines.items), total=lines.total(),
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
    for event_type in dict.fromkeys(m.event_type for m in plan.meters):
        meters = [m for m in plan.meters if m.event_type == event_type]
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
    lines.add("fee", f"{name}{note}", _q(fraction), fee.amount, fee.amount * fraction, fee.key)


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
        lines.add("fee", f"{name} (time-weighted seats)", _q(seat_time), fee.unit_price,
                  seat_time * fee.unit_price, fee.key)
        return
    held = max(segments[0].seats if segments else 0, fee.min_seats)
    fraction = prorate_fraction(start, end, period)
    note = "" if fraction == ONE else f", prorated {_pct(fraction)}"
    lines.add("fee", f"{name} ({held} seats{note})", Decimal(held) * _q(fraction), fee.unit_price,
              held * fraction * fee.unit_price, fee.key)
    for seg in segments[1:]:
        if seg.seats > held:
            added = seg.seats - held
            part = prorate_fraction(seg.start, end, period)
            lines.add("fee", f"{name}: {added} seat(s) added {seg.start.date().isoformat()}, prorated {_pct(part)}",
                      added * _q(part), fee.unit_price, added * part * fee.unit_price, fee.key)
            held = seg.seats


def _usage_charge(lines: _Lines, charge: UsageCharge, totals: MeterTotals, seats: Decimal) -> ChargeUsage:
    name = charge.name or charge.key
    included = charge.included.units(seats) if charge.included else ZERO
    billable_units = max(ZERO, totals.units - included)
    share = billable_units / totals.units if totals.units > 0 else ZERO
    billable = Billable(billable_units, totals.cost * share,
                        totals.events if included == 0 else int(totals.events * share),
                        totals.transactions)
    start = len(lines.items)
    if charge.included is not None:
        lines.add("usage", f"{name}: {dec_str(totals.units)} used, {dec_str(included)} included",
                  min(totals.units, included), ZERO, ZERO, charge.key, charge.meter)
    policy = charge.on_exhaustion
    if isinstance(policy, SlowTierPolicy):
        if billable_units > 0:
            lane = f" on {policy.model}" if policy.model else ""
            lines.add("usage", f"{name}: slow tier{lane}", billable_units, policy.unit_price,
                      billable_units * policy.unit_price, charge.key, charge.meter)
    elif charge.price is not None:
        parts: list[Part] = [p for p in price_parts(charge.price, billable) if p.quantity or p.amount]
        if not parts and charge.included is None:
            parts = [Part("", totals.units, _unit_price(charge), ZERO)]
        for part in parts:
            label = f"{name} ({part.label})" if part.label else name
            lines.add("usage", label, part.quantity, part.unit_price, part.amount, charge.key, charge.meter)
        cap = getattr(policy, "spend_cap", None)
        spent = lines.total("usage", key=charge.key)
        if cap is not None and spent > round_line(cap, lines.currency):
            cap_amount = round_line(cap, lines.currency)
            lines.add("cap", f"{name}: spend cap {cap_amount} reached", ONE, None, cap_amount - spent,
                      charge.key, charge.meter)
    amount = sum((ln.amount for ln in lines.items[start:]), ZERO)
    return ChargeUsage(charge.key, charge.meter, totals.units, included, billable_units, totals.cost, amount)


def _apply_credits(lines: _Lines, plan: Plan, inp: RatingInput, seats: Decimal) -> dict[str, Decimal]:
    """Draw credits against usage charges, soonest-expiring grant first.

    A grant that expires inside the period draws only on usage charged before its expiry
    (when ``inp.usage_before`` has the usage up to that instant): the amount each charge had
    reached by then, less what earlier-expiring grants already drew from it. Drawing the
    earliest deadline first covers as much as any order could."""
    if not inp.grants and not plan.credits:
        return {}
    grants = list(inp.grants)
    for credit in plan.credits:
        amount = credit.amount * (seats if credit.per_seat else ONE)
        grants.append(CreditGrant(f"plan:{credit.key}", amount, credit.name or credit.key,
                                  inp.period.end, inp.period.start, credit.applies_to))
    usable = [g for g in grants
              if g.amount > 0
              and (g.effective_at is None or g.effective_at < inp.period.end)
              and (g.expires_at is None or g.expires_at > inp.period.start)]
    usable.sort(key=lambda g: (g.expires_at is None, g.expires_at or inp.period.end, g.id))
    full = {c.key: max(ZERO, lines.total("usage", "cap", key=c.key)) for c in plan.charges}
    remaining = dict(full)
    drawn_from = {key: ZERO for key in full}  # by every grant so far, per charge
    # a plan-wide spend cap reduces what credits can cover, proportionally per charge is
    # overkill: cap the total instead
    cap_total = lines.total("cap", key="spend_cap")
    budget_left = sum(remaining.values(), ZERO) + cap_total
    used: dict[str, Decimal] = {}
    for grant in usable:
        balance = _floor_minor(grant.amount, plan.currency)
        reached = _charged_before(plan, inp, grant.expires_at, seats)
        drawn = ZERO
        for key in (grant.applies_to or tuple(remaining)):
            room = remaining.get(key, ZERO)
            if reached is not None:
                room = min(room, max(ZERO, min(reached.get(key, ZERO), full.get(key, ZERO)) - drawn_from.get(key, ZERO)))
            take = min(balance - drawn, room, budget_left)
            if take > 0:
                remaining[key] -= take
                drawn_from[key] += take
                budget_left -= take
                drawn += take
        if drawn > 0:
            used[grant.id] = drawn
            lines.add("credit", f"{grant.name} applied", ONE, None, -drawn, grant.id)
    return used


def _charged_before(plan: Plan, inp: RatingInput, t: datetime | None, seats: Decimal) -> dict[str, Decimal] | None:
    """What each usage charge amounted to (rounded lines, caps included) on the usage before
    ``t``; None when ``t`` is not inside the period or its usage was not given."""
    if t is None or not inp.period.start < t < inp.period.end or t not in inp.usage_before:
        return None
    scratch = _Lines(plan.currency)
    usage = inp.usage_before[t]
    for charge in plan.charges:
        _usage_charge(scratch, charge, usage.get(charge.meter, MeterTotals()), seats)
    return {c.key: max(ZERO, scratch.total("usage", "cap", key=c.key)) for c in plan.charges}


def _floor_minor(amount: Decimal, currency: str) -> Decimal:
    rounded = round_line(amount, currency)
    if rounded > amount:  # never draw more than the grant holds
        from billing.money import quantum
        rounded -= quantum(currency)
    return rounded


def _unit_price(charge: UsageCharge) -> Decimal | None:
    return getattr(charge.price, "unit_price", None)


def _q(value: Decimal) -> Decimal:
    """Display quantity: at most 6 decimals (amounts use the exact value)."""
    return value.quantize(Decimal("0.000001")).normalize() if value != value.to_integral_value() else value


def _pct(fraction: Decimal) -> str:
    return f"{(fraction * 100).quantize(Decimal('0.01'))}%"
