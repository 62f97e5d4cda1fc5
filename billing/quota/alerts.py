"""Budget alert thresholds reached (pure): which ``budget_alerts`` thresholds the customer's
usage has reached this period.

Subjects (each alerts once per period and threshold; the ledger layer remembers which
fired and queues a webhook for each new one):

* ``charge:<key>:included`` — units used of the charge's included allowance;
* ``charge:<key>:spend_cap`` — the charge's spend of its overage ``spend_cap``;
* ``spend_cap`` — the plan's usage spend of its ``spend_cap``;
* ``budget`` — the plan's usage spend of ``budget_alerts.budget``.

Only committed usage counts (holds are not usage yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from billing.catalog.schema import Plan
from billing.money import dec_str
from billing.quota.decide import MeterUsage, UsageState, charge_spend, included_units

ZERO = Decimal(0)
HUNDRED = Decimal(100)


@dataclass(frozen=True)
class Alert:
    subject: str
    threshold: Decimal  # percent
    value: Decimal  # usage (units) or spend (money) now
    limit: Decimal  # the allowance, cap or budget
    unit: str  # "units" | currency code

    def to_json(self) -> dict:
        return {"subject": self.subject, "threshold_percent": dec_str(self.threshold), "value": dec_str(self.value),
                "limit": dec_str(self.limit), "unit": self.unit,
                "percent": dec_str((self.value / self.limit * HUNDRED).quantize(Decimal("0.01")))
                if self.limit > 0 else None}


def reached(plan: Plan, state: UsageState) -> list[Alert]:
    """Every (subject, threshold) the committed usage has reached (value >= threshold% of limit)."""
    spec = plan.budget_alerts
    if spec is None:
        return []
    measures: list[tuple[str, Decimal, Decimal, str]] = []
    total = ZERO
    for charge in plan.charges:
        used = state.usage.get(charge.meter, MeterUsage())
        inc = included_units(charge, state.seats)
        spend = charge_spend(charge, used.units, used.cost, used.events, inc)
        cap = getattr(charge.on_exhaustion, "spend_cap", None)
        if charge.included is not None and inc > 0:
            measures.append((f"charge:{charge.key}:included", used.units, inc, "units"))
        if cap is not None and cap > 0:
            measures.append((f"charge:{charge.key}:spend_cap", min(spend, cap), cap, plan.currency))
            spend = min(spend, cap)
        total += spend
    if plan.spend_cap is not None and plan.spend_cap > 0:
        measures.append(("spend_cap", total, plan.spend_cap, plan.currency))
    if spec.budget is not None and spec.budget > 0:
        measures.append(("budget", total, spec.budget, plan.currency))
    out = []
    for subject, value, limit, unit in measures:
        for threshold in spec.thresholds_percent:
            if value * HUNDRED >= limit * threshold:
                out.append(Alert(subject, threshold, value, limit, unit))
    return out
