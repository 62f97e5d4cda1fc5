"""A fast path for simulations: a plan *compiled* for one period, rating many customers'
meter totals to the same total ``billing.rating.engine.rate_period`` gives.

It covers the common simulation case only -- the customer holds a constant number of
seats for the whole period, with no trial, no mid-period start or end and no prepaid
grants -- and prices with the one charge arithmetic the engine uses
(``billing.rating.arithmetic``: included units, each charge's billed amount, the plan cap,
credits, the minimum); only the recurring fees of a whole period are its own (one line per
fee at constant seats). Everything outside that case goes through ``rate_period`` itself
(``rate_totals`` decides).
``tests/simulate/test_fastrate.py`` holds it equal to ``rate_period`` (totals, fee lines and
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

from billing.catalog.schema import FlatFee, Plan
from billing.money import round_line
from billing.rating.arithmetic import (
    capacity_peaks, charge_spend, commitment_true_up, credit_pool, draw_credits, included_by_charge, plan_cap_line,
    recurring_credits, usable_grants)
from billing.rating.periods import Period
from billing.rating.types import MeterTotals

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


class FastRater:
    def __init__(self, plan: Plan, period: Period):
        self.plan = plan
        self.compiled = compiled = plan.compiled
        self.period = period
        self.currency = plan.currency
        self._fees: dict[int, Decimal] = {}
        self._credits: dict[int, list[tuple[str, Decimal, tuple[str, ...] | None, None]]] = {}
        self._charges = compiled.charges
        self._keys = [c.key for c in compiled.charges]
        # Memo of results: the rating is a pure function of the seats and, per charge, the
        # meter's units (per_unit and slow-tier prices read nothing else) or its whole totals.
        self._memo: dict[tuple, FastResult] = {}
        self._memo_on, self._hits, self._misses = True, 0, 0
        self._key_parts = tuple((c.meter, c.slow_price is None and c.unit_price is None and c.price is not None)
                                for c in compiled.charges)
        # a capacity charge also reads its other meters' peaks (units)
        self._key_parts += tuple((key, False) for c in compiled.charges for key in c.capacity_meters
                                 if key != c.meter)

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

    def _credit_grants(self, seats: int) -> list[tuple[str, Decimal, tuple[str, ...] | None, None]]:
        """The plan's credits at ``seats``, in drawing order (none expires inside the period)."""
        grants = self._credits.get(seats)
        if grants is None:
            p = self.period
            usable = usable_grants(recurring_credits(self.compiled, seats, p.start, p.end), p.start, p.end)
            grants = self._credits[seats] = [(*g, None) for g in credit_pool(usable, self.currency)]
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
        included = included_by_charge(self.compiled, seats)
        per_charge: dict[str, Decimal] = {}  # billed amount (usage + cap lines) per charge key
        summaries = []
        usage_total = ZERO
        get = usage.get
        for charge, inc in zip(self._charges, included):
            totals = get(charge.meter, _EMPTY)
            units = totals.units
            amount = charge_spend(charge, currency, units, totals.cost, totals.events, totals.transactions, inc,
                                  capacity_peaks(charge, usage) if charge.capacity_meters else (), groups=totals.groups)
            per_charge[charge.key] = amount
            usage_total += amount
            past = units - inc if units > inc else ZERO
            if not throttled_only or (charge.throttles and past > 0):
                summaries.append(FastUsage(charge.key, units, inc, past, amount))
        cap_line = plan_cap_line(self.compiled, usage_total)
        before_credits = fees + usage_total + cap_line
        total = before_credits
        grants = self._credits.get(seats)
        if grants is None:
            grants = self._credit_grants(seats)
        if grants:
            for _, drawn in draw_credits(grants, per_charge, cap_line):
                total -= drawn
        if self.compiled.plan.minimum_commitment is not None:
            total += commitment_true_up(self.compiled, ONE, before_credits, usage_total + cap_line)
        return FastResult(total, fees, tuple(summaries))


def fast_path_applies(period: Period, customer_period: Period | None, seat_changes, grants,
                      active_from=None, active_until=None, trial_end=None) -> bool:
    """The customer fits the fast path: the simulation's own period, constant seats
    (no seat history), no prepaid grants, active the whole period, no trial."""
    return (not seat_changes and not grants and (customer_period is None or customer_period == period)
            and active_from is None and active_until is None and trial_end is None)
