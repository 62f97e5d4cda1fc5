"""What a plan's quota would have done to the usage: each interaction replayed through THE
quota decision (``billing.quota.decide``), in time order. Pure.

Under a candidate plan, usage is not what it would cost on another plan: past a fast quota
the calls go to the slow lane's model, past a ``block`` allowance or a full rate-limit
window they are refused, past an agent task limit, a spend cap or a guard the decision
applies, likewise. ``gate_events`` gives the events the plan would have let through:

- an *interaction* is a customer's events at one instant (the synthetic stream writes a
  ``request``, its ``llm.call`` and any escalation or outcome at the same time; a ledger
  event stands alone unless it shares its instant);
- each event of the interaction that a charged ``count`` / ``sum`` meter of the plan counts
  asks ``decide`` (quantity: 1, or the summed property; the model, the agent task, the
  event's tokens and provider cost) against the usage let through so far this period, the
  rate-window counts and the task's usage; the strictest answer decides the interaction;
- deny: the interaction's events are removed (counted by reason); downgrade to a model:
  every event of the interaction that names a model is re-modelled (and so re-costed);
- events outside the period, and interactions no charged meter counts, pass unchanged.

The decision sees committed usage only (no holds): replaying a month, every earlier call
has finished.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import groupby

from billing.catalog.schema import Plan, RateLimitPolicy, SlowTierPolicy
from billing.events import UsageEvent
from billing.quota.decide import MeterUsage, Outcome, QuotaRequest, TaskUsage, UsageState, decide, rate_window
from billing.rating.meters import measured, meter_value
from billing.rating.periods import Period
from billing.simulate.sim_event import SimEvent

ZERO = Decimal(0)


@dataclass
class GateCounts:
    """What the plan's quota did to one customer's interactions."""

    interactions: int = 0
    downgraded: int = 0
    denied: Counter = field(default_factory=Counter)  # reason -> interactions

    def add(self, other: "GateCounts") -> None:
        self.interactions += other.interactions
        self.downgraded += other.downgraded
        self.denied.update(other.denied)

    def to_json(self) -> dict:
        return {"interactions": self.interactions, "downgraded": self.downgraded,
                "denied": dict(sorted(self.denied.items()))}


def _limits(plan: Plan) -> dict[str, int]:
    """Charge key -> rate-limit window (seconds) of the charges that rate-limit."""
    out = {}
    for c in plan.charges:
        p = c.on_exhaustion
        limit = p.rate_limit if isinstance(p, (SlowTierPolicy, RateLimitPolicy)) else None
        if limit is not None:
            out[c.key] = limit.window_seconds
    return out


def gate_events(plan: Plan, events: Sequence[UsageEvent], period: Period, cost_of: Callable[[UsageEvent], Decimal],
                seats: int = 1) -> tuple[list[UsageEvent], GateCounts]:
    """The events ``plan`` lets through (see module docstring) and what it did."""
    cp = plan.compiled
    charged = {c.meter for c in plan.charges}
    gated = [m for m in plan.meters if m.key in charged and m.aggregation in ("count", "sum")]
    if not gated and plan.agent_limits is None:
        return list(events), GateCounts()
    windows = _limits(plan)
    task_property = plan.agent_limits.task_property if plan.agent_limits else None
    usage: dict[str, MeterUsage] = {}
    rate: Counter = Counter()  # (charge, window start) -> grants
    tasks: dict[str, TaskUsage] = {}
    counts = GateCounts()
    out: list[UsageEvent] = []
    ordered = sorted(events, key=lambda e: (e.timestamp, e.id))
    for at, group in groupby(ordered, key=lambda e: e.timestamp):
        interaction = list(group)
        if not period.start <= at < period.end:
            out.extend(interaction)
            continue
        asks = [(m, e) for e in interaction for m in gated if m.matches(e.type, e.properties)]
        if not asks:
            out.extend(interaction)
            _record(plan, interaction, usage, tasks, task_property, cost_of)
            continue
        counts.interactions += 1
        state = UsageState(now=at, period_start=period.start, period_end=period.end, usage=dict(usage), seats=seats,
                           rate_counts={k: rate[(k, rate_window(at, w)[0])] for k, w in windows.items()})
        decisions = [decide(plan, _with_task(state, tasks, task_property, e), _request(cp, m, e, task_property, cost_of))
                     for m, e in asks]
        denied = next((d for d in decisions if d.outcome == Outcome.DENY), None)
        if denied is not None:
            counts.denied[str(denied.reason)] += 1
            continue
        model = next((d.lane.model for d in decisions if d.outcome == Outcome.DOWNGRADE and d.lane.model), None)
        if model is not None:
            counts.downgraded += 1
            interaction = [SimEvent(e.id, e.customer, e.type, e.timestamp, {**e.properties, "model": model})
                           if "model" in e.properties else e for e in interaction]
        for d in decisions:
            for charge, start, _ in d.rate_windows:
                rate[(charge, start)] += 1
        out.extend(interaction)
        _record(plan, interaction, usage, tasks, task_property, cost_of)
    return out, counts


def _request(cp, meter, event: UsageEvent, task_property: str | None, cost_of) -> QuotaRequest:
    props = event.properties
    quantity = Decimal(1) if meter.aggregation == "count" else (measured(meter, event) or ZERO)
    mult = meter.multipliers
    if mult is not None and not (mult.property == "model" and props.get("model") is not None):
        quantity *= mult.factor(props)  # decide weighs by the model itself, by nothing else
    return QuotaRequest(event.customer, meter.key, quantity, model=props.get("model"),
                        task=str(props[task_property]) if task_property and props.get(task_property) is not None
                        else None, tokens=_tokens(event), cost=cost_of(event))


def _with_task(state: UsageState, tasks: dict[str, TaskUsage], task_property: str | None,
               event: UsageEvent) -> UsageState:
    task = event.properties.get(task_property) if task_property else None
    if task is None:
        return state
    return UsageState(**{**state.__dict__, "task": tasks.get(str(task), TaskUsage())})


def _tokens(event: UsageEvent) -> int:
    return sum(int(event.number(k)) for k in ("input_tokens", "output_tokens", "cache_read_tokens")
               if event.properties.get(k) is not None)


def _record(plan: Plan, interaction: list[UsageEvent], usage: dict[str, MeterUsage], tasks: dict[str, TaskUsage],
            task_property: str | None, cost_of) -> None:
    """Add the interaction's events to the usage let through (and their tasks')."""
    for e in interaction:
        cost = cost_of(e)
        for m in plan.meters:
            if m.aggregation in ("count", "sum") and m.matches(e.type, e.properties):
                value = meter_value(m, e) or ZERO
                usage[m.key] = usage.get(m.key, MeterUsage()) + MeterUsage(value, cost, 1)
        task = e.properties.get(task_property) if task_property else None
        if task is not None:
            t = tasks.get(str(task), TaskUsage())
            tasks[str(task)] = TaskUsage(t.steps + 1, t.tokens + _tokens(e), t.cost + cost)

