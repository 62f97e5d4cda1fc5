"""Capacity across meters: the lowest tier in which every named meter's period peak fits
bills its flat amount -- exact against a plain reference, through the one charge
arithmetic, the invoice, the quota's usage report and decision; and its validation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import PlanInvalid, parse_plan_text
from billing.quota import MeterUsage, QuotaRequest, UsageState, decide
from billing.quota.usage import charge_spends
from billing.rating import arithmetic
from billing.rating.engine import RatingInput, rate_period
from billing.rating.periods import calendar_month
from billing.rating.types import MeterTotals
from billing.simulate.fastrate import FastRater

D = Decimal
OCT = calendar_month(2026, 10)
NOW = datetime(2026, 10, 20, tzinfo=UTC)

WORKED = """\
plan: agents
name: Agent capacity
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: agents, event_type: agent.heartbeat, aggregation: max, property: running}
  - {key: memory_gb, event_type: agent.heartbeat, aggregation: max, property: memory_gb}
charges:
  - key: capacity
    meter: agents
    price:
      model: capacity
      meters: [agents, memory_gb]
      tiers:
        - {up_to: {agents: 5, memory_gb: 16}, flat_fee: "49.00"}
        - {up_to: {agents: 20, memory_gb: 64}, flat_fee: "199.00"}
        - {flat_fee: "799.00"}
"""


def plan_text(rows: list[tuple[tuple[int, int] | None, str]], at_zero: bool, cap: str | None = None) -> str:
    tiers = "\n".join(f'        - {{up_to: {{agents: {r[0][0]}, memory_gb: {r[0][1]}}}, flat_fee: "{r[1]}"}}'
                      if r[0] is not None else f'        - {{flat_fee: "{r[1]}"}}' for r in rows)
    text = WORKED.split("      tiers:")[0] + "      tiers:\n" + tiers + "\n"
    if at_zero:
        text += "      flat_fee_at_zero: true\n"
    if cap is not None:
        text += f'    on_exhaustion: {{policy: overage, spend_cap: "{cap}"}}\n'
    return text


def reference(rows, agents: Decimal, memory: Decimal, at_zero: bool) -> Decimal:
    """The first tier (in order) both peaks fit in; nothing for an idle period by default."""
    if agents == 0 and memory == 0 and not at_zero:
        return D(0)
    for limits, fee in rows:
        if limits is None or (agents <= limits[0] and memory <= limits[1]):
            return D(fee)
    raise AssertionError("the last tier is unbounded")


fees = st.sampled_from(["0", "9.99", "49", "199.5", "20"])


@st.composite
def cases(draw):
    n = draw(st.integers(0, 3))
    agents = sorted(draw(st.lists(st.integers(1, 40), min_size=n, max_size=n)))
    memory = sorted(draw(st.lists(st.integers(1, 128), min_size=n, max_size=n)))
    rows = [((a, m + i), draw(fees)) for i, (a, m) in enumerate(zip(agents, memory))] + [(None, draw(fees))]
    peaks = (D(draw(st.integers(0, 45))), D(draw(st.integers(0, 140))))
    at_zero = D(rows[0][1]) > 0 and draw(st.booleans())  # a first tier with a fee to bill
    return rows, at_zero, peaks, draw(st.sampled_from([None, "0", "50", "500"]))


@settings(max_examples=200, deadline=None)
@given(cases())
def test_capacity_bills_the_lowest_tier_every_peak_fits(case):
    rows, at_zero, (agents, memory), cap = case
    plan = parse_plan_text(plan_text(rows, at_zero, cap), "capacity.yaml")
    charge = plan.compiled.charge("capacity")
    usage = {"agents": MeterTotals(agents, events=1), "memory_gb": MeterTotals(memory, events=1)}
    expected = reference(rows, agents, memory, at_zero)
    peaks = arithmetic.capacity_peaks(charge, usage)
    assert peaks == (agents, memory)
    assert arithmetic.charge_amount(charge, "USD", agents, peaks=peaks) == expected
    billed = arithmetic.charge_spend(charge, "USD", agents, peaks=peaks)
    assert billed == (min(expected, D(cap)) if cap is not None else expected)
    # the invoice, the quota's usage report and decision, the simulation's fast path agree
    invoice = rate_period(RatingInput(plan, "c", OCT, usage))
    assert invoice.total == billed
    state = UsageState(now=NOW, period_start=OCT.start, period_end=OCT.end,
                       usage={k: MeterUsage(t.units, t.cost, t.events) for k, t in usage.items()})
    assert [s.spend for s in charge_spends(plan, state)] == [billed]
    assert decide(plan, state, QuotaRequest("c", "memory_gb", D(0))).spend == billed
    assert FastRater(plan, OCT).rate(usage, 1).total == billed
    # the quota holds caps against a peak no lower than any amount reached on the way
    assert arithmetic.peak_exact(charge, agents, peaks=peaks) >= expected


@pytest.mark.parametrize("agents, memory, expected", [
    ("0", "0", "0"),          # an idle period bills nothing (flat_fee_at_zero: false)
    ("3", "16", "49.00"),     # both fit the first tier
    ("3", "20", "199.00"),    # memory needs the second
    ("21", "8", "799.00"),    # agents need the unbounded one
])
def test_worked_capacity(agents, memory, expected):
    plan = parse_plan_text(WORKED, "agents.yaml")
    invoice = rate_period(RatingInput(plan, "c", OCT, {"agents": MeterTotals(D(agents)),
                                                         "memory_gb": MeterTotals(D(memory))}))
    assert invoice.total == D(expected)


def test_a_request_on_either_meter_is_decided_by_the_capacity_charge():
    plan = parse_plan_text(plan_text([((5, 16), "49.00"), ((20, 64), "199.00"), (None, "799.00")], False,
                                     cap="199.00"), "capped.yaml")
    state = UsageState(now=NOW, period_start=OCT.start, period_end=OCT.end,
                       usage={"agents": MeterUsage(D(4)), "memory_gb": MeterUsage(D(60))})
    grows = decide(plan, state, QuotaRequest("c", "memory_gb", D(3)))  # 63 GB: still the second tier
    assert (grows.outcome, grows.charges, grows.spend, grows.amount) == ("allow", ("capacity",), D("199.00"), D(0))
    denied = decide(plan, state, QuotaRequest("c", "memory_gb", D(5)))  # 65 GB: the third tier passes the cap
    assert (denied.outcome, denied.reason) == ("deny", "spend_cap_reached")
    assert decide(plan, state, QuotaRequest("c", "agents", D(17))).reason == "spend_cap_reached"


BAD = """\
plan: bad
name: Bad capacity
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: agents, event_type: agent.heartbeat, aggregation: max, property: running}
  - {key: memory_gb, event_type: agent.heartbeat, aggregation: sum, property: memory_gb}
  - {key: calls, event_type: llm.call}
charges:
  - key: capacity
    meter: calls
    included: {pooled: 5}
    price:
      model: capacity
      meters: [agents, memory_gb, gpus]
      tiers:
        - {up_to: {agents: 5, memory_gb: 16, gpus: 1}, flat_fee: "49.00"}
        - {up_to: {agents: 4, memory_gb: 64, gpus: 1}, flat_fee: "199.00"}
        - {up_to: {agents: 4, memory_gb: 64, gpus: 1}, flat_fee: "299.00"}
        - {up_to: {agents: 40}, flat_fee: "799.00"}
"""


def test_bad_capacity_prices_are_named_problems():
    with pytest.raises(PlanInvalid) as info:
        parse_plan_text(BAD, "bad.yaml")
    found = [(p.path, p.line) for p in info.value.problems]
    assert found == [
        ("charges[0].meter", 10),                # the charge's meter is not among the price's
        ("charges[0].included", 11),             # included units do not apply
        ("charges[0].price.meters[1]", 14),      # a sum meter: capacity reads peaks
        ("charges[0].price.meters[2]", 14),      # no such meter
        ("charges[0].price.tiers[1].up_to.agents", 17),  # 4 < 5: tiers out of order
        ("charges[0].price.tiers[2].up_to", 18),  # no larger than tier 1 in any meter
        ("charges[0].price.tiers[3].up_to", 19),  # the last tier must be unbounded ...
        ("charges[0].price.tiers[3].up_to", 19),  # ... and a bounded tier limits every meter
    ]
    messages = [p.message for p in info.value.problems]
    assert "must be one of them" in messages[0] and "do not apply" in messages[1]
    assert "aggregation: max" in messages[2] and "unknown meter 'gpus'" in messages[3]
    assert "must be at least 5" in messages[4] and "ordered" in messages[5]
    assert "last tier must be unbounded" in messages[6] and "missing ['memory_gb', 'gpus']" in messages[7]
