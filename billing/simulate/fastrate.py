"""A fast path for simulations: a plan *compiled* for one period, rating many customers'
meter totals to the same total ``billing.rating.engine.rate_period`` gives.

It covers the common simulation case only -- the customer holds a constant number of
seats for the whole period, with no trial, no mid-period start or end and no prepaid
grants -- and reuses the engine's own pieces for everything that prices (the charge models
via ``price_parts``, ``round_line``, ``Included.units``, the plan's credits). Everything
outside that case goes through ``rate_period`` itself (``rate_totals`` decides).
``tests/test_simulate_fastrate.py`` holds it equal to ``rate_period`` (totals, fee lines and
per-charge usage) on every shipped plan and on generated usage.

Why: ``rate_period`` builds every invoice line, seat segment and proration fraction (about
0.2-0.4 ms a customer); a simulation of 100,000 customers x 3 plans needs only the totals,
and the fees of a whole period at a given seat count are the same for every customer.
Results are memoized per (seats, usage that can matter): customers with the same count of
messages on a per-unit plan share one computation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple
from decimal import Decimal

from billing.catalog.schema import BlockPolicy, FlatFee, PerUnitPrice, Plan, RateLimitPolicy, SlowTierPolicy
from billing.money import quantum, round_line
from billing.rating.charges import price_parts
from billing.rating.periods import Period
from billing.rating.types import Billable, MeterTotals

ZERO = Decimal(0)
ONE = Decimal(1)
_EMPTY = MeterTotals()
MEMO_SIZE = 200_000  # distinct (seats, usage) results kept per plan
MEMO_PROBE = 2_000  # after this many misses, give the memo up if under 1 in 10 lookups hit


class FastUsage(NamedTuple):
    """Per charge, what ``ChargeUsage`` would say (for throttling reports)."""

    charge: str
    units: Decimal
    included: Decimal
    billable: Decimal
    amount: Decimal


class FastResult(NamedTuple):
    total: Decimal
    fees: Decimal
    usage: tuple[FastUsage, ...]


class _Charge(NamedTuple):
    key: str
    meter: str
    included: object  # Included | None
    slow_price: Decimal | None  # downgrade policy: the slow tier's unit price
    unit_price: Decimal | None  # per_unit price: priced inline (same expression as per_unit.rate)
    price: object  # any other price model: through price_parts
    cap: Decimal | None  # the charge's spend cap, rounded
    throttles: bool  # block / downgrade / rate_limit


class FastRater:
    def __init__(self, plan: Plan, period: Period):
        self.plan = plan
        self.period = period
        self.currency = plan.currency
        self._fees: dict[int, Decimal] = {}
        self._credits: dict[int, list[tuple[str, Decimal, tuple[str, ...] | None]]] = {}
        self._included: dict[int, tuple[Decimal, ...]] = {}
        charges = []
        for c in plan.charges:
            policy = c.on_exhaustion
            slow = policy.unit_price if isinstance(policy, SlowTierPolicy) else None
            cap = getattr(policy, "spend_cap", None)
            per_unit = c.price.unit_price if isinstance(c.price, PerUnitPrice) else None
            charges.append(_Charge(c.key, c.meter, c.included, slow, per_unit,
                                   None if per_unit is not None else c.price,
                                   round_line(cap, plan.currency) if cap is not None else None,
                                   isinstance(policy, (BlockPolicy, SlowTierPolicy, RateLimitPolicy))))
        self._charges = charges
        self._keys = [c.key for c in plan.charges]
        self._spend_cap = round_line(plan.spend_cap, plan.currency) if plan.spend_cap is not None else None
        mc = plan.minimum_commitment
        self._minimum = round_line(mc.amount * ONE, plan.currency) if mc is not None else None
        self._minimum_all = mc is not None and mc.applies_to == "all"
        # Memo of results: the rating is a pure function of the seats and, per charge, the
        # meter's units (per_unit and slow-tier prices read nothing else) or its whole totals.
        self._memo: dict[tuple, FastResult] = {}
        self._memo_on, self._hits, self._misses = True, 0, 0
        self._key_parts = tuple((c.meter, c.slow_price is None and c.unit_price is None and c.price is not None)
                                for c in charges)

    # -- the seat-dependent parts, computed once per seat count -----------------------------
    def fees(self, seats: int) -> Decimal:
        """Recurring fees of a whole period at ``seats`` seats (each line rounded once)."""
        total = self._fees.get(seats)
        if total is None:
            total = ZERO
            for fee in self.plan.fees:
                if isinstance(fee, FlatFee):
                    total += round_line(fee.amount * ONE, self.currency)
                else:  # advance or arrears: the same for constant seats over the whole period
                    total += round_line(max(seats, fee.min_seats) * ONE * fee.unit_price, self.currency)
            self._fees[seats] = total
        return total

    def _included_units(self, seats: int) -> tuple[Decimal, ...]:
        units = self._included.get(seats)
        if units is None:
            max_seats = Decimal(seats)
            units = self._included[seats] = tuple(c.included.units(max_seats) if c.included else ZERO
                                                  for c in self._charges)
        return units

    def _credit_grants(self, seats: int) -> list[tuple[str, Decimal, tuple[str, ...] | None]]:
        grants = self._credits.get(seats)
        if grants is None:
            grants = []
            for credit in self.plan.credits:
                amount = credit.amount * (Decimal(seats) if credit.per_seat else ONE)
                if amount > 0:
                    grants.append((f"plan:{credit.key}", _floor_minor(amount, self.currency), credit.applies_to))
            grants.sort(key=lambda g: g[0])
            self._credits[seats] = grants
        return grants

    # -- one customer ----------------------------------------------------------------------
    def rate(self, usage: Mapping[str, MeterTotals], seats: int, *, throttled_only: bool = False) -> FastResult:
        """The customer's total and fees; ``usage`` lists every charge, or with
        ``throttled_only`` just the charges past their included units under a throttling
        policy (block / downgrade / rate_limit)."""
        if not self._memo_on:
            return self._rate(usage, seats, throttled_only)
        parts = self._key_parts
        if len(parts) == 1:
            meter, whole = parts[0]
            totals = usage.get(meter, _EMPTY)
            key = (seats, throttled_only, totals if whole else totals.units)
        else:
            key = (seats, throttled_only, *[usage.get(m, _EMPTY) if whole else usage.get(m, _EMPTY).units
                                            for m, whole in parts])
        hit = self._memo.get(key)
        if hit is not None:
            self._hits += 1
            return hit
        result = self._rate(usage, seats, throttled_only)
        self._misses += 1
        if self._misses >= MEMO_PROBE and self._hits * 10 < self._misses:
            self._memo_on, self._memo = False, {}  # usage rarely repeats here: stop paying for keys
        elif len(self._memo) < MEMO_SIZE:
            self._memo[key] = result
        return result

    def _rate(self, usage: Mapping[str, MeterTotals], seats: int, throttled_only: bool) -> FastResult:
        currency = self.currency
        fees = self._fees.get(seats)
        if fees is None:
            fees = self.fees(seats)
        included_units = self._included.get(seats) or self._included_units(seats)
        per_charge: dict[str, Decimal] = {}  # usage + cap lines per charge key
        summaries = []
        usage_total = ZERO
        get = usage.get
        for (key, meter, _, slow_price, unit_price, price, cap, throttles), included in zip(self._charges,
                                                                                            included_units):
            totals = get(meter, _EMPTY)
            units = totals.units
            billable_units = units - included if units > included else ZERO
            amount = ZERO
            if slow_price is not None:
                if billable_units > 0:
                    amount = round_line(billable_units * slow_price, currency)
            elif unit_price is not None:
                if billable_units:  # per_unit.rate: one part, units x unit price
                    amount = round_line(billable_units * unit_price, currency)
                if cap is not None and amount > cap:
                    amount = cap
            elif price is not None:
                share = billable_units / units if units > 0 else ZERO
                billable = Billable(billable_units, totals.cost * share,
                                    totals.events if included == 0 else int(totals.events * share),
                                    totals.transactions)
                for part in price_parts(price, billable):
                    if part.quantity or part.amount:
                        amount += round_line(part.amount, currency)
                if cap is not None and amount > cap:
                    amount = cap  # the cap line: cap - spent
            per_charge[key] = per_charge.get(key, ZERO) + amount
            usage_total += amount
            if not throttled_only or (throttles and billable_units > 0):
                summaries.append(FastUsage(key, units, included, billable_units, amount))
        plan_cap_line = ZERO
        if self._spend_cap is not None and usage_total > self._spend_cap:
            plan_cap_line = self._spend_cap - usage_total
        before_credits = fees + usage_total + plan_cap_line
        total = before_credits
        grants = self._credits.get(seats)
        if grants is None:
            grants = self._credit_grants(seats)
        if grants:
            remaining = {k: max(ZERO, per_charge.get(k, ZERO)) for k in self._keys}
            budget_left = sum(remaining.values(), ZERO) + plan_cap_line
            for _, balance, applies_to in grants:
                drawn = ZERO
                for key in (applies_to or tuple(remaining)):
                    take = min(balance - drawn, remaining.get(key, ZERO), budget_left)
                    if take > 0:
                        remaining[key] -= take
                        budget_left -= take
                        drawn += take
                if drawn > 0:
                    total += round_line(-drawn, currency)
        if self._minimum is not None:
            base = before_credits if self._minimum_all else usage_total + plan_cap_line
            if self._minimum > base:
                total += self._minimum - base
        return FastResult(total, fees, tuple(summaries))


def _floor_minor(amount: Decimal, currency: str) -> Decimal:
    rounded = round_line(amount, currency)
    if rounded > amount:
        rounded -= quantum(currency)
    return rounded


def fast_path_applies(period: Period, customer_period: Period | None, seat_changes, grants,
                      active_from=None, active_until=None, trial_end=None) -> bool:
    """The customer fits the fast path: the simulation's own period, constant seats
    (no seat history), no prepaid grants, active the whole period, no trial."""
    return (not seat_changes and not grants and (customer_period is None or customer_period == period)
            and active_from is None and active_until is None and trial_end is None)
