"""What a customer has used and spent this period, per charge (pure): the figures of the
usage report (``Quota.usage``, ``GET /v1/customers/{id}/usage``).

The spend of a charge is ``billing.rating.arithmetic.charge_spend`` on the committed usage
plus the live holds: for committed usage alone it is exactly what the invoice bills for
the charge (its usage lines and cap line), and the plan's spend is their sum (the
invoice's usage lines before the plan spend cap and credits).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from billing.catalog.schema import Plan
from billing.quota.decide import MeterUsage, UsageState, transactions_of
from billing.rating import arithmetic

ZERO = Decimal(0)
_EMPTY = MeterUsage()


@dataclass(frozen=True, slots=True)
class ChargeSpend:
    charge: str
    meter: str
    policy: str
    used: Decimal  # committed units
    held: Decimal  # units under live holds
    included: Decimal | None  # None: the charge has no allowance
    remaining_included: Decimal | None
    spend: Decimal  # billed amount on used + held (rounded once, at most the cap)
    spend_cap: Decimal | None


def charge_spends(plan: Plan, state: UsageState) -> list[ChargeSpend]:
    compiled = plan.compiled
    out = []
    for charge in compiled.charges:
        used = state.usage.get(charge.meter, _EMPTY)
        held = state.held.get(charge.meter, _EMPTY)
        both = used + held
        inc = arithmetic.included_units(charge, state.seats)
        tx = transactions_of(state, charge.meter) if charge.per_transaction else ()
        peaks = tuple(state.usage.get(key, _EMPTY).units + state.held.get(key, _EMPTY).units
                      for key in charge.capacity_meters)
        spend = arithmetic.charge_spend(charge, compiled.currency, both.units, both.cost, both.events, tx, inc, peaks,
                                        groups=both.groups)
        has_allowance = charge.included is not None
        out.append(ChargeSpend(charge.key, charge.meter, charge.policy.policy, used.units, held.units,
                               inc if has_allowance else None,
                               max(ZERO, inc - both.units) if has_allowance else None, spend, charge.spend_cap))
    return out


def budget_counters(plan: Plan, state: UsageState) -> dict[str, Decimal]:
    """The measures of the budgets read from the period's counters (``budgets.from_counters``),
    committed and held, as ``budgets.judge`` and ``budgets.passed`` take them: ``billed`` (the
    plan's usage spend, ``charge_spends``), ``cost`` (provider cost) and ``units:<meter>`` for
    every meter a units budget of ``state`` counts."""
    from billing.quota.guards import held_cost

    counters = {"billed": sum((c.spend for c in charge_spends(plan, state)), ZERO),
                "cost": state.provider_cost + held_cost(state)}
    for use in state.budgets:
        meter = use.budget.meter
        if use.budget.measure == "units" and meter is not None:
            counters[f"units:{meter}"] = state.usage.get(meter, _EMPTY).units + state.held.get(meter, _EMPTY).units
    return counters
