"""THE charge arithmetic of a plan (pure): every consumer that prices usage calls this module.

The rating engine, the quota decision and its alerts, the usage report, the forecast and
the simulation's fast path all compute here, on a compiled plan (``Plan.compiled``):

* ``included_units``: a charge's allowance (per seat x seats + pooled);
* ``billable``: the units past it, with their share of the provider cost and events (a
  capacity charge reads several meters: ``capacity_peaks`` gives their period peaks, which
  every function below takes as ``peaks``);
* ``charge_amount``: the charge's amount for a usage state, every price model (and the
  slow tier), computed exactly and **rounded once** (``money.round_line``): a graduated
  charge is not rounded tier by tier, a percentage charge is the sum of its
  per-transaction fees. ``billed`` then applies the charge's spend cap: what the
  invoice bills for the charge (its lines and its cap line together) -- and the spend a
  quota reports, alerts and forecasts measure;
* ``peak_exact``: the highest exact amount reached at any usage up to the state (only a
  volume price can fall as usage grows): what a quota decision holds against a spend cap,
  so more usage never turns a deny into an allow;
* ``breakdown``: the same amount as invoice detail (tiers, fees per transaction...), each
  part's share allocated so that the parts add up exactly to the once-rounded amount;
* plan-wide rules on the charges' billed amounts: ``plan_cap_line`` (the plan spend cap),
  ``recurring_credits`` / ``usable_grants`` / ``credit_pool`` / ``draw_credits`` (credits
  drawn soonest expiry first, usage charges only, never below zero), ``commitment_true_up`` (the minimum);
* a contract's rules on the plan, and THE order of every plan-wide rule (see "contracts on
  the plan" below): ``discounts`` (coupons), ``credit_room``, ``term_minimum`` (a term
  commitment spread pro rata), ``true_ups``;
* ``measures``: the alert / forecast subjects (``charge:<key>:included``,
  ``charge:<key>:spend_cap``, ``spend_cap``, ``budget``) with their values and limits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from billing.catalog.compiled import CompiledCharge, CompiledPlan
from billing.catalog.schema import UsageCharge
from billing.money import quantum, round_line
from billing.rating.charges import capacity, price_parts
from billing.rating.charges.past import past_included
from billing.rating.types import Billable, CreditGrant, Discount, Groups, Part, TermCommitment, merge_groups

ZERO = Decimal(0)
ONE = Decimal(1)
_NO_TRANSACTIONS: tuple[Decimal, ...] = ()
_NO_PEAKS: tuple[Decimal, ...] = ()


# ------------------------------------------------------------------- one charge

def included_units(charge: CompiledCharge | UsageCharge, seats: int | Decimal) -> Decimal:
    """Units included in the period: ``per_seat`` x seats (the most held) + ``pooled``."""
    return charge.included.units(Decimal(seats)) if charge.included is not None else ZERO


def included_by_charge(plan: CompiledPlan, seats: int) -> tuple[Decimal, ...]:
    """``included_units`` of every charge of the plan, in plan order, at ``seats`` (kept on
    the compiled plan per seat count: decisions ask it for every check)."""
    memo = plan.memo
    hit = memo.get(seats)
    if hit is None:
        if len(memo) > 1000:
            memo.clear()
        hit = memo[seats] = tuple(included_units(c, seats) for c in plan.charges)
    return hit


def capacity_peaks(charge: CompiledCharge, usage: Mapping[str, Any]) -> tuple[Decimal, ...]:
    """A capacity charge's meter peaks read off ``usage`` (meter -> anything with ``units``,
    a missing meter peaking at 0), in the price's order; () for every other charge."""
    if not charge.capacity_meters:
        return _NO_PEAKS
    get = usage.get
    return tuple(ZERO if (t := get(key)) is None else t.units for key in charge.capacity_meters)


def billable(units: Decimal, cost: Decimal, events: int, transactions: tuple[Decimal, ...],
             included: Decimal, peaks: tuple[Decimal, ...] = (), groups: Groups | None = None) -> Billable:
    """The units past the included ones, their share of the provider cost and of the
    events (all of them when nothing is included: ``charges.past``); a capacity price's
    ``peaks`` as given. A dimension price (``groups`` not None) also gets the usage per
    value and the included units, which it draws itself; usage not split by value (live
    holds, simulated totals) is one group without a value."""
    usage = past_included(units, cost, events, transactions, included)
    if groups is None and not peaks:
        return usage
    if groups is None:
        return Billable(usage.units, usage.cost, usage.events, transactions, peaks)
    return Billable(usage.units, usage.cost, usage.events, transactions, peaks,
                    whole_groups(groups, units, cost, events), included)


def whole_groups(groups: Groups, units: Decimal, cost: Decimal, events: int) -> Groups:
    """``groups`` with what the totals hold beyond them as one group without a value."""
    rest_units = units - sum((g[1] for g in groups), ZERO)
    rest_cost = cost - sum((g[2] for g in groups), ZERO)
    rest_events = events - sum(g[3] for g in groups)
    if rest_units <= 0 and rest_cost <= 0 and rest_events <= 0:
        return groups
    return merge_groups(groups, ((None, max(rest_units, ZERO), max(rest_cost, ZERO), max(rest_events, 0)),))


def exact_amount(charge: CompiledCharge, usage: Billable) -> Decimal:
    """The charge's amount on its billable usage, unrounded, before its spend cap."""
    if charge.linear_price is not None:  # the slow tier, or per_unit.rate's one part without building it
        return usage.units * charge.linear_price
    if charge.price is None:
        return ZERO
    total = ZERO
    for part in price_parts(charge.price, usage):
        total += part.amount
    return total


def exact_charge(charge: CompiledCharge, units: Decimal, cost: Decimal = ZERO, events: int = 0,
                 transactions: tuple[Decimal, ...] = _NO_TRANSACTIONS, included: Decimal = ZERO,
                 peaks: tuple[Decimal, ...] = _NO_PEAKS, groups: Groups = ()) -> Decimal:
    """The charge's exact amount for a period's usage (unrounded, before its spend cap);
    ``peaks``: a capacity charge's meter peaks (``capacity_peaks``); ``groups``: the meter's
    per-value totals (a dimension price)."""
    price = charge.linear_price
    if price is not None:  # per_unit or the slow tier, without building a Billable
        return (units - included) * price if units > included else ZERO
    return exact_amount(charge, billable(units, cost, events, transactions, included, peaks,
                                         groups if charge.by_value else None))


def charge_amount(charge: CompiledCharge, currency: str, units: Decimal, cost: Decimal = ZERO, events: int = 0,
                  transactions: tuple[Decimal, ...] = _NO_TRANSACTIONS, included: Decimal = ZERO,
                  peaks: tuple[Decimal, ...] = _NO_PEAKS, groups: Groups = ()) -> Decimal:
    """The charge's amount for a period's usage, rounded once, before its spend cap."""
    return round_line(exact_charge(charge, units, cost, events, transactions, included, peaks, groups), currency)


def billed(charge: CompiledCharge, amount: Decimal) -> Decimal:
    """What the invoice bills for a charge of (rounded) ``amount``: at most its spend cap."""
    cap = charge.cap_line
    return cap if cap is not None and amount > cap else amount


def charge_spend(charge: CompiledCharge, currency: str, units: Decimal, cost: Decimal = ZERO, events: int = 0,
                 transactions: tuple[Decimal, ...] = _NO_TRANSACTIONS, included: Decimal = ZERO,
                 peaks: tuple[Decimal, ...] = _NO_PEAKS, groups: Groups = ()) -> Decimal:
    """The spend of a charge that the invoice bills and quotas, alerts and forecasts report:
    its amount rounded once, at most its spend cap."""
    # exact_charge and billed, inline: the simulation's hot path
    price = charge.linear_price
    if price is None:
        amount = round_line(exact_amount(charge, billable(units, cost, events, transactions, included, peaks,
                                                          groups if charge.by_value else None)), currency)
    elif units > included:
        amount = round_line((units - included) * price, currency)
    else:
        return ZERO
    cap = charge.cap_line
    return cap if cap is not None and amount > cap else amount


def peak_exact(charge: CompiledCharge, units: Decimal, cost: Decimal = ZERO, events: int = 0,
               transactions: tuple[Decimal, ...] = _NO_TRANSACTIONS, included: Decimal = ZERO,
               peaks: tuple[Decimal, ...] = _NO_PEAKS, groups: Groups = ()) -> Decimal:
    """The highest exact amount (``exact_charge``) reached at any usage up to ``units``:
    what a quota decision holds against a spend cap.

    Every price model but volume and capacity only grows with usage; a volume price can fall
    past a tier end, so its candidates are the amounts at the bounded tiers' ends below the
    usage; a capacity price's candidates are the tiers up to the one the peaks fit in (a
    dimension price takes neither: its amount only grows)."""
    if charge.capacity_meters:
        return capacity.peak_amount(charge.price, peaks)
    amount = exact_charge(charge, units, cost, events, transactions, included, groups=groups)
    if charge.volume_ends and units > 0:
        past = units - included
        for end in charge.volume_ends:
            if end < past:
                at = included + end
                fraction = at / units
                amount = max(amount, exact_charge(charge, at, cost * fraction, int(events * fraction), transactions,
                                                  included))
    return amount


@dataclass(frozen=True, slots=True)
class Breakdown:
    """A charge's invoice detail: its parts (exact) with each part's rounded share, the
    once-rounded amount they add up to, and the cap line (0 when under the cap)."""

    usage: Billable
    parts: tuple[Part, ...]
    shares: tuple[Decimal, ...]  # per part, adding up exactly to ``amount``
    amount: Decimal  # rounded once, before the cap
    cap_line: Decimal  # billed - amount (<= 0)

    @property
    def billed(self) -> Decimal:
        return self.amount + self.cap_line


def breakdown(charge: CompiledCharge, currency: str, units: Decimal, cost: Decimal, events: int,
              transactions: tuple[Decimal, ...], included: Decimal,
              peaks: tuple[Decimal, ...] = _NO_PEAKS, groups: Groups = ()) -> Breakdown:
    usage = billable(units, cost, events, transactions, included, peaks, groups if charge.by_value else None)
    if charge.slow_price is not None:
        parts = [Part("slow tier", usage.units, charge.slow_price, usage.units * charge.slow_price)] \
            if usage.units > 0 else []
    elif charge.price is not None:
        parts = [p for p in price_parts(charge.price, usage) if p.quantity or p.amount]
    else:
        parts = []
    shares = allocate([p.amount for p in parts], currency)
    amount = sum(shares, ZERO)  # = round_line(the parts' exact sum) = charge_amount (a test holds it)
    return Breakdown(usage, tuple(parts), tuple(shares), amount, billed(charge, amount) - amount)


def allocate(amounts: Sequence[Decimal], currency: str) -> list[Decimal]:
    """Rounded shares of exact ``amounts`` that add up to their sum rounded once: share i is
    round(a_1 + ... + a_i) - round(a_1 + ... + a_(i-1)), each a multiple of the minor unit."""
    shares: list[Decimal] = []
    running = ZERO
    previous = ZERO
    for amount in amounts:
        running += amount
        rounded = round_line(running, currency)
        shares.append(rounded - previous)
        previous = rounded
    return shares


# ------------------------------------------------------------------- the plan

def plan_cap_line(plan: CompiledPlan, usage_total: Decimal) -> Decimal:
    """The plan spend cap's line (<= 0) on the usage lines' total (charges' caps applied)."""
    cap = plan.spend_cap_line
    return cap - usage_total if cap is not None and usage_total > cap else ZERO


def recurring_credits(plan: CompiledPlan, seats: int | Decimal, start: datetime | None = None,
                      end: datetime | None = None) -> list[CreditGrant]:
    """The plan's credits of one period (per seat: x the most seats held), as grants
    effective at its start and expiring at its end."""
    return [CreditGrant(f"plan:{c.key}", c.amount * (Decimal(seats) if c.per_seat else ONE), c.name or c.key,
                        end, start, c.applies_to) for c in plan.plan.credits]


def earned_fees(plan: CompiledPlan, seats: int, fraction: Decimal) -> Decimal:
    """The part of the period's recurring fees earned after ``fraction`` of it
    (``periods.prorate_fraction``): each flat fee, and each seat fee at ``seats`` (at least
    its ``min_seats``), times the fraction, unrounded. What the quota's margin guard counts
    as revenue from fees; the invoice itself rates seat fees on the seat history."""
    total = ZERO
    for fee in plan.plan.fees:
        total += fee.amount if fee.type == "flat" else fee.unit_price * max(seats, fee.min_seats)
    return total * fraction


def usable_grants(grants: Sequence[CreditGrant], start: datetime, end: datetime) -> list[CreditGrant]:
    """Grants with a balance in force during [start, end), in drawing order: soonest expiry
    first (never-expiring last), then by id."""
    usable = [g for g in grants
              if g.amount > 0 and (g.effective_at is None or g.effective_at < end)
              and (g.expires_at is None or g.expires_at > start)]
    if len(usable) > 1:
        usable.sort(key=lambda g: (g.expires_at is None, g.expires_at or end, g.id))
    return usable


def floor_minor(amount: Decimal, currency: str) -> Decimal:
    """``amount`` down to the minor unit: a grant never draws more than it holds."""
    rounded = round_line(amount, currency)
    return rounded - quantum(currency) if rounded > amount else rounded


def credit_pool(grants: Sequence[CreditGrant], currency: str) -> list[tuple[str, Decimal, tuple[str, ...] | None]]:
    """(id, balance floored to the minor unit, charge keys or None) of grants in drawing
    order: a grant never draws more than it holds."""
    return [(g.id, floor_minor(g.amount, currency), g.applies_to) for g in grants]


def draw_credits(grants: Sequence[tuple[str, Decimal, tuple[str, ...] | None, Mapping[str, Decimal] | None]],
                 charged: Mapping[str, Decimal], cap_line: Decimal) -> list[tuple[str, Decimal]]:
    """What each grant draws, in the order given: (id, balance from ``credit_pool``, charge
    keys it applies to or None for all, and -- for a grant expiring inside the period --
    each charge's billed amount on the usage before its expiry, else None).

    A grant draws against the charges' billed amounts (never below zero), within its
    balance, within what the plan spend cap left billable, and an expiring grant only up to
    what each charge had reached by its expiry, less what earlier grants drew from it.
    Returns (id, amount drawn) for each grant that drew."""
    full = {key: amount if amount > 0 else ZERO for key, amount in charged.items()}
    remaining = dict(full)
    budget_left = sum(full.values(), ZERO) + cap_line
    out: list[tuple[str, Decimal]] = []
    for grant_id, balance, applies_to, reached in grants:
        drawn = ZERO
        for key in (applies_to or full):
            room = remaining.get(key, ZERO)
            if reached is not None:  # drawn from the charge so far: full - remaining
                before = full.get(key, ZERO)
                room = min(room, max(ZERO, min(reached.get(key, ZERO), before) - (before - room)))
            take = min(balance - drawn, room, budget_left)
            if take > 0:
                remaining[key] -= take
                budget_left -= take
                drawn += take
        if drawn > 0:
            out.append((grant_id, drawn))
    return out


def commitment_true_up(plan: CompiledPlan, fraction: Decimal, all_lines: Decimal, usage_lines: Decimal) -> Decimal:
    """The minimum commitment's true-up line: the (prorated, rounded) minimum less what the
    invoice already bills (every line before credits, or its usage lines only), or 0."""
    commitment = plan.plan.minimum_commitment
    if commitment is None:
        return ZERO
    minimum = round_line(commitment.amount * fraction, plan.currency)
    base = all_lines if commitment.applies_to == "all" else usage_lines
    return minimum - base if minimum > base else ZERO


# ------------------------------------------------------- contracts on the plan
# The order an invoice applies its plan-wide rules in, owned here (``rating.engine`` lays
# the lines out in it): (1) recurring fees and usage charges, each charge at most its spend
# cap; (2) the plan spend cap; (3) discounts (coupons), in redemption order, each at most
# what its scope still bills; (4) prepaid credits, on the usage charges, never more than
# the invoice still bills (``credit_room``); (5) commitment true-ups, the plan's minimum
# then each term commitment's share, each on the charges before discounts and credits plus
# the true-ups before it. The total never goes below zero: discounts stop at what their
# scope bills, credits at what the invoice bills after them, true-ups only add.

def discounts(items: Sequence[Discount], all_lines: Decimal, usage_lines: Decimal,
              currency: str) -> list[tuple[str, Decimal]]:
    """(id, amount off >= 0) per discount, in the order given. A discount is taken on what
    its scope bills -- every line so far (``all``) or the usage lines with their caps
    (``usage``) -- less the discounts before it: ``percent`` of that, rounded once, or
    ``amount``, at most that (a coupon worth more than the invoice stops it at zero)."""
    out: list[tuple[str, Decimal]] = []
    given = ZERO
    for d in items:
        base = (all_lines if d.applies_to == "all" else usage_lines) - given
        if base <= 0:
            off = ZERO
        elif d.percent is not None:
            off = round_line(base * d.percent / 100, currency)
        else:
            off = round_line(d.amount or ZERO, currency)
        off = min(off, base) if base > 0 else ZERO
        given += off
        out.append((d.id, off))
    return out


def credit_room(cap_line: Decimal, usage_lines: Decimal, after_discounts: Decimal) -> Decimal:
    """What ``draw_credits`` takes as its plan-cap line once discounts applied: credits draw
    on the usage charges (``usage_lines``, the plan cap ``cap_line`` included) but never more
    than the invoice still bills after its discounts (``after_discounts``)."""
    over = usage_lines - after_discounts
    return cap_line - over if over > 0 else cap_line


def term_minimum(term: TermCommitment, start: datetime, end: datetime, currency: str) -> Decimal:
    """A term commitment's minimum for the window [start, end): its amount x the share of
    the term's time elapsed at ``end``, rounded, less the same at ``start`` -- so the
    minimums of windows covering the term add up to its amount exactly."""
    length = _micros(term.ends_at - term.starts_at)

    def reached(t: datetime) -> Decimal:
        if t <= term.starts_at:
            return ZERO
        if t >= term.ends_at:
            return round_line(term.amount, currency)
        return round_line(term.amount * _micros(t - term.starts_at) / length, currency)

    return reached(end) - reached(start)


def _micros(delta: timedelta) -> Decimal:
    return Decimal((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds)


def true_ups(minimums: Sequence[tuple[str, Decimal, str]], all_lines: Decimal,
             usage_lines: Decimal) -> list[tuple[str, Decimal]]:
    """(id, true-up >= 0) of commitments (id, rounded minimum, ``all`` | ``usage``) in the
    order given: each tops its base up to its minimum -- every line before discounts and
    credits, or the usage lines -- and raises both bases for the next."""
    out: list[tuple[str, Decimal]] = []
    for cid, minimum, applies_to in minimums:
        base = all_lines if applies_to == "all" else usage_lines
        add = minimum - base if minimum > base else ZERO
        all_lines += add
        usage_lines += add
        out.append((cid, add))
    return out


# ---------------------------------------------------------------- measures

@dataclass(frozen=True, slots=True)
class Measure:
    """One quantity a budget alert or a forecast watches: ``value`` of ``limit``."""

    subject: str  # charge:<key>:included | charge:<key>:spend_cap | spend_cap | budget
    value: Decimal
    limit: Decimal
    unit: str  # "units" or the currency


def measures(plan: CompiledPlan, usage: Mapping[str, Any], seats: int,
             transactions: Mapping[str, tuple[Decimal, ...]] | None = None) -> list[Measure]:
    """The alert / forecast measures of a usage state (``usage``: meter -> units, cost,
    events, and ``transactions`` per meter, or the totals' own): units of each charge's
    allowance, each charge's billed amount of its spend cap, and the charges' billed total
    (the invoice's usage lines before the plan cap) of the plan spend cap and the budget."""
    out: list[Measure] = []
    total = ZERO
    currency = plan.currency
    for charge in plan.charges:
        t = usage.get(charge.meter)
        inc = included_units(charge, seats)
        peaks = capacity_peaks(charge, usage)
        if t is None:  # no usage: still a first tier's fee at zero usage, or a capacity tier
            units = ZERO
            spend = charge_spend(charge, currency, ZERO, included=inc, peaks=peaks)
        else:
            tx = transactions.get(charge.meter, ()) if transactions is not None else t.transactions or ()
            units = t.units
            spend = charge_spend(charge, currency, t.units, t.cost, t.events, tx, inc, peaks,
                                 getattr(t, "groups", None) or ())
        if charge.included is not None and inc > 0:
            out.append(Measure(f"charge:{charge.key}:included", units, inc, "units"))
        if charge.spend_cap is not None and charge.spend_cap > 0:
            out.append(Measure(f"charge:{charge.key}:spend_cap", spend, charge.spend_cap, currency))
        total += spend
    p = plan.plan
    if p.spend_cap is not None and p.spend_cap > 0:
        out.append(Measure("spend_cap", total, p.spend_cap, currency))
    budget = p.budget_alerts.budget if p.budget_alerts is not None else None
    if budget is not None and budget > 0:
        out.append(Measure("budget", total, budget, currency))
    return out
