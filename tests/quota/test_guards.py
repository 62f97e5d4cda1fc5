"""Cost guards in the quota decision (``billing.quota.guards`` through ``decide``): each
guard is judged on the provider cost after the call and follows its policy; the margin
floor counts the flat fee's earned part; alerts on committed cost."""

from __future__ import annotations

from decimal import Decimal as D

from hypothesis import given, strategies as st

from billing.catalog import parse_plan_text
from billing.quota.alerts import reached
from billing.quota.decide import MeterUsage, QuotaRequest, TaskUsage, UsageState, decide
from tests.support.guards import CHEAP, COST_RACE_PLAN, WHALE_PLAN
from tests.support.quota import NOW, T0

PERIOD_END = T0.replace(month=11)
WHALE = parse_plan_text(WHALE_PLAN, "w.yaml")
CAPPED = parse_plan_text(COST_RACE_PLAN, "c.yaml")
# 9.5 of October's 31 days have passed at NOW: the flat $200's earned part, and half of it
EARNED = D(200) * D("9.5") / D(31)
MARGIN_LIMIT = EARNED * D("0.5")


def state(provider_cost=D(0), held_cost=D(0), **kw) -> UsageState:
    held = {"requests": MeterUsage(D(1), held_cost, 1)} if held_cost else {}
    return UsageState(now=NOW, period_start=T0, period_end=PERIOD_END, provider_cost=provider_cost, held=held, **kw)


def test_a_cost_cap_counts_committed_held_and_the_call_and_denies_past_it():
    ok = decide(CAPPED, state(D(20), D(3)), QuotaRequest("acme", "requests", cost=D(2)))
    assert ok.granted and ok.guard is None and ok.reason == "overage"
    over = decide(CAPPED, state(D(20), D(3)), QuotaRequest("acme", "requests", cost=D("2.01")))
    assert (over.outcome, over.reason, over.guard) == ("deny", "cost_guard", "cost_cap")
    assert over.retry_after == (PERIOD_END - NOW).total_seconds()
    assert over.to_json()["guard"] == "cost_cap" and "25.01 > 25" in over.message


def test_the_margin_floor_counts_the_flat_fees_earned_part_and_downgrades_to_its_model():
    below = MARGIN_LIMIT - D(1)
    ok = decide(WHALE, state(below), QuotaRequest("acme", "calls", model="claude-opus-4-1", cost=D(1)))
    assert ok.outcome == "allow" and ok.guard is None and ok.lane.model == "claude-opus-4-1"
    down = decide(WHALE, state(below), QuotaRequest("acme", "calls", model="claude-opus-4-1", cost=D("1.01")))
    assert (down.outcome, down.reason, down.guard, down.lane.tier, down.lane.model) == (
        "downgrade", "cost_guard", "margin_floor", "slow", CHEAP)
    # past the cost cap as well: the deny wins and names the cap
    capped = decide(WHALE, state(D(59)), QuotaRequest("acme", "calls", cost=D(2)))
    assert (capped.outcome, capped.guard) == ("deny", "cost_cap")


def test_the_margin_floor_counts_usage_revenue_less_credits():
    plan = parse_plan_text(COST_RACE_PLAN.replace("cost_cap: {amount: 25, on_breach: {policy: deny}}",
                                                  "margin_floor: {percent: 50, on_breach: {policy: deny}}"), "m.yaml")
    used = {"requests": MeterUsage(D(1000), D(0), 1000)}  # 1000 x 0.01 = $10 billed so far
    assert decide(plan, state(D(5), usage=used), QuotaRequest("acme", "requests", quantity=D(0))).granted
    assert decide(plan, state(D("5.01"), usage=used), QuotaRequest("acme", "requests", quantity=D(0))).guard \
        == "margin_floor"
    # $4 of credits drawn: revenue $6, the floor allows $3 of cost
    credited = state(D("3.01"), usage=used, credit_balances={"g1": (D(4), None)})
    assert decide(plan, credited, QuotaRequest("acme", "requests", quantity=D(0))).outcome == "deny"


TASK_PLAN = COST_RACE_PLAN.replace("cost_cap: {amount: 25, on_breach: {policy: deny}}",
                                   "task_cost: {amount: 5, on_breach: {policy: alert}}") + \
    "agent_limits: {max_cost: 8}\n"


def test_a_task_cost_guard_reads_the_task_usage_agent_limits_reads():
    plan = parse_plan_text(TASK_PLAN, "t.yaml")
    task = TaskUsage(steps=3, tokens=0, cost=D(4))
    alert = decide(plan, state(task=task), QuotaRequest("acme", "requests", task="t1", cost=D(2)))
    assert (alert.outcome, alert.guard) == ("allow", "task_cost") and "task provider cost 6 > 5" in alert.message
    limit = decide(plan, state(task=task), QuotaRequest("acme", "requests", task="t1", cost=D(5)))
    assert (limit.outcome, limit.reason) == ("deny", "task_limit")  # max_cost: the same figure, 9 > 8
    assert decide(plan, state(task=task), QuotaRequest("acme", "requests", cost=D(5))).guard is None  # no task


def test_a_rate_limit_policy_counts_grants_in_its_own_window():
    plan = parse_plan_text(COST_RACE_PLAN.replace(
        "on_breach: {policy: deny}", "on_breach: {policy: rate_limit, rate_limit: {limit: 2, window_seconds: 60}}"),
        "r.yaml")
    assert plan.compiled.has_rate_limits
    d = decide(plan, state(D(30)), QuotaRequest("acme", "requests", cost=D(1)))
    assert (d.outcome, d.reason, d.guard) == ("allow", "cost_guard", "cost_cap")
    assert [w[0] for w in d.rate_windows] == ["guard:cost_cap"]
    full = decide(plan, state(D(30), rate_counts={"guard:cost_cap": 2}), QuotaRequest("acme", "requests", cost=D(1)))
    assert (full.outcome, full.reason, full.guard) == ("deny", "rate_limited", "cost_cap")


def test_a_guard_alerts_once_committed_cost_passes_it():
    assert reached(WHALE, state(MARGIN_LIMIT)) == []
    [alert] = reached(WHALE, state(MARGIN_LIMIT + D("0.01")))
    assert (alert.subject, alert.threshold, alert.limit) == ("cost_guard:margin_floor", 100, MARGIN_LIMIT)
    assert [a.subject for a in reached(WHALE, state(D("60.01")))] == ["cost_guard:cost_cap",
                                                                      "cost_guard:margin_floor"]


@given(committed=st.decimals(0, 40, places=6), held=st.decimals(0, 10, places=6), cost=st.decimals(0, 10, places=6))
def test_property_a_cost_cap_denies_exactly_the_calls_that_would_pass_it(committed, held, cost):
    d = decide(CAPPED, state(committed, held), QuotaRequest("acme", "requests", cost=cost))
    assert d.granted == (committed + held + cost <= 25)
    assert (d.guard == "cost_cap") == (committed + held + cost > 25)


def test_the_plans_readme_worked_example():
    from pathlib import Path

    from billing.quota.guards import margin_limit, revenue_to_date

    readme = (Path(__file__).resolve().parents[2] / "plans" / "README.md").read_text()
    earned = revenue_to_date(WHALE, state(), D(0), D(0))
    limit = margin_limit(D(50), earned)
    assert f"${earned:.2f} of the $200 fee is earned" in readme and f"reach ${limit:.2f}." in readme
    down = decide(WHALE, state(D(18)), QuotaRequest("acme", "calls", model="claude-opus-4-1", cost=D(15)))
    assert (down.outcome, down.lane.model) == ("downgrade", CHEAP) and "$18.00 committed" in readme
    deny = decide(WHALE, state(D("45.60")), QuotaRequest("acme", "calls", model="claude-opus-4-1", cost=D(15)))
    assert (deny.outcome, deny.guard) == ("deny", "cost_cap") and "$45.60 committed" in readme


def test_a_decision_says_what_remains_for_the_customer_and_the_task():
    d = decide(CAPPED, state(D(20), D(3)), QuotaRequest("acme", "requests", cost=D(1)))
    assert d.cost_remaining == 2 and d.to_json()["cost_remaining"] == "2" and d.task is None
    whale = decide(WHALE, state(D(10)), QuotaRequest("acme", "calls"))
    assert whale.cost_remaining == MARGIN_LIMIT - 10  # the margin floor is the stricter guard
    plan = parse_plan_text(TASK_PLAN.replace("agent_limits: {max_cost: 8}", "agent_limits: {max_cost: 8, max_steps: 5}"),
                           "t.yaml")
    t = decide(plan, state(task=TaskUsage(steps=3, tokens=10, cost=D(4))), QuotaRequest("acme", "requests", task="t1"))
    assert t.task == {"steps": 2, "tokens": None, "cost": 1}  # the task_cost guard (5) is stricter than max_cost
    assert t.to_json()["task"] == {"steps": 2, "tokens": None, "cost": "1"}
    assert decide(plan, state(), QuotaRequest("acme", "requests")).task is None  # not a task's call
