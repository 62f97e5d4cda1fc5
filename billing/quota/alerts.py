"""Budget alert thresholds reached (pure): which ``budget_alerts`` thresholds the customer's
usage has reached this period.

Subjects (each alerts once per period and threshold; the ledger layer remembers which
fired and queues a webhook for each new one):

* ``charge:<key>:included`` — units used of the charge's included allowance;
* ``charge:<key>:spend_cap`` — the charge's spend of its overage ``spend_cap``;
* ``spend_cap`` — the plan's usage spend of its ``spend_cap``;
* ``budget`` — the plan's usage spend of ``budget_alerts.budget``.

Only committed usage counts (holds are not usage yet). The forecast
(``billing.reports.forecast``) projects the same measures, under the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from billing.catalog.schema import Plan
from billing.money import dec_str
from billing.quota.decide import UsageState, committed_transactions
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
        return []
    compiled = plan.compiled
    transactions = {m: committed_transactions(state, m) for m in compiled.transaction_meters}
    out = []
    for m in measures(compiled, state.usage, state.seats, transactions):
        for threshold in spec.thresholds_percent:
            if m.value * HUNDRED >= m.limit * threshold:
                out.append(Alert(m.subject, threshold, m.value, m.limit, m.unit))
    return out
