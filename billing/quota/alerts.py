"""Budget alert thresholds reached (pure): which ``budget_alerts`` thresholds the customer's
usage has reached this period.

Subjects (each alerts once per period and threshold; the ledger layer remembers which
fired and queues a webhook for each new one):

* ``charge:<key>:included`` — units used of the charge's included allowance;
* ``charge:<key>:spend_cap`` — the charge's spend of its overage ``spend_cap``;
* ``spend_cap`` — the plan's usage spend of its ``spend_cap``;
* ``budget`` — the plan's usage spend of ``budget_alerts.budget``;
* ``cost_guard:cost_cap`` / ``cost_guard:margin_floor`` (threshold 100) — the provider
  cost passed the plan's cost guard (``billing.quota.guards.alert_measures``): the guard's
  alert, recorded whatever its policy;
* ``whale`` (threshold 100) — a plan with alerts but no margin floor: the provider cost
  passed the revenue to date (the margin floor's rule at 0 %).

Only committed usage counts (holds are not usage yet). The forecast
(``billing.reports.forecast``) projects the same measures, under the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from billing.catalog.schema import Plan
from billing.money import dec_str
from billing.quota.decide import UsageState, committed_transactions, plan_credit_amount
from billing.quota.guards import alert_measures
from billing.quota.usage import charge_spends
from billing.rating.arithmetic import measures

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
    """Every (subject, threshold) the committed usage has reached (value >= threshold% of
    limit), on the measures of the one charge arithmetic (``arithmetic.measures``: the
    spends are what the invoice bills for this usage)."""
    spec = plan.budget_alerts
    if spec is None:
        return guard_alerts(plan, state)
    compiled = plan.compiled
    transactions = {m: committed_transactions(state, m) for m in compiled.transaction_meters}
    out = []
    for m in measures(compiled, state.usage, state.seats, transactions):
        for threshold in spec.thresholds_percent:
            if m.value * HUNDRED >= m.limit * threshold:
                out.append(Alert(m.subject, threshold, m.value, m.limit, m.unit))
    return out + guard_alerts(plan, state)


def alerts_on(plan: Plan) -> bool:
    """Whether the plan has anything to alert on (budget alerts or cost guards)."""
    return plan.budget_alerts is not None or plan.cost_guard is not None


def guard_alerts(plan: Plan, state: UsageState) -> list[Alert]:
    """The cost guards the committed provider cost has passed (value > limit), at 100 %,
    and the whale measure (``alert_measures``)."""
    if not alerts_on(plan):
        return []
    spend = sum((c.spend for c in charge_spends(plan, state)), ZERO)
    credits = sum((a for a, _ in plan_credit_amount(plan, state.seats)), ZERO) + sum(
        (a for a, _ in state.credit_balances.values()), ZERO)
    return [Alert(m.subject, HUNDRED, m.value, m.limit, "USD")
            for m in alert_measures(plan, state, spend, credits) if m.value > m.limit]
