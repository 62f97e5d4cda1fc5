"""A plan's cost guardrails (``cost_guard``): limits on what the vendor *pays* the model
providers for a customer, not on what the customer is billed.

* ``cost_cap``: the customer's provider cost this period (committed events, live holds and
  the call asked about) may reach ``amount``;
* ``margin_floor``: the margin on the revenue earned so far (the earned part of the flat and
  seat fees plus the usage the invoice would bill, less credits drawn) must stay at least
  ``percent`` %: the provider cost may reach ``revenue x (100 - percent) / 100``;
* ``task_cost``: one agent task's provider cost may reach ``amount`` (the task is named by
  ``agent_limits.task_property`` and measured as ``agent_limits.max_cost`` measures it).

Past a guard the call follows the guard's ``on_breach`` policy: ``alert`` (allowed; the
decision names the guard and the alert path records it), ``downgrade`` (to a named cheaper
``model``, optionally rate limited), ``rate_limit`` (at most ``limit`` per window), or
``deny``. The decision rules are ``billing.quota.guards``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from billing.catalog.base import Frozen, Positive, RateLimit


class AlertOnBreach(Frozen):
    """Allow the call; the decision names the guard and an alert is recorded once a period."""

    policy: Literal["alert"]


class DenyOnBreach(Frozen):
    """Deny the call (``reason: cost_guard``, ``guard: <name>``)."""

    policy: Literal["deny"]


class DowngradeOnBreach(Frozen):
    """Continue on the named cheaper ``model`` (the slow lane, as a ``downgrade`` exhaustion
    policy does), at most ``rate_limit`` calls per window when given."""

    policy: Literal["downgrade"]
    model: str = Field(min_length=1)
    rate_limit: RateLimit | None = None


class RateLimitOnBreach(Frozen):
    """Allow at most ``rate_limit.limit`` calls per window (as a ``rate_limit`` exhaustion policy)."""

    policy: Literal["rate_limit"]
    rate_limit: RateLimit


OnBreach = Annotated[Union[AlertOnBreach, DenyOnBreach, DowngradeOnBreach, RateLimitOnBreach],
                     Field(discriminator="policy")]


class CostCapGuard(Frozen):
    amount: Positive  # provider cost per period, in the cost book's currency (USD)
    on_breach: OnBreach


class MarginFloorGuard(Frozen):
    percent: Annotated[Decimal, Field(ge=0, le=100)]  # the lowest margin on earned revenue, 0-100
    on_breach: OnBreach


class TaskCostGuard(Frozen):
    amount: Positive  # provider cost per agent task
    on_breach: OnBreach


GUARD_NAMES = ("cost_cap", "margin_floor", "task_cost")  # in the order the decision judges them


class CostGuard(Frozen):
    cost_cap: CostCapGuard | None = None
    margin_floor: MarginFloorGuard | None = None
    task_cost: TaskCostGuard | None = None

    @model_validator(mode="after")
    def _some(self) -> "CostGuard":
        if self.cost_cap is None and self.margin_floor is None and self.task_cost is None:
            raise ValueError("set at least one of cost_cap, margin_floor, task_cost")
        return self

    def guards(self) -> tuple[tuple[str, CostCapGuard | MarginFloorGuard | TaskCostGuard], ...]:
        """(name, guard) of the guards set, in ``GUARD_NAMES`` order."""
        return tuple((name, g) for name in GUARD_NAMES if (g := getattr(self, name)) is not None)

    def rate_limited(self) -> bool:
        return any(getattr(g.on_breach, "rate_limit", None) is not None for _, g in self.guards())
