"""The plan language's ``cost_guard``: each bad guard is a named problem at its path, all
collected (``file:line: path: message``)."""

from __future__ import annotations

import pytest

from billing.catalog import PlanInvalid, parse_plan_text
from tests.support.guards import WHALE_PLAN

HEAD = """
plan: g
name: Guarded
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: calls, event_type: llm.call}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PlanInvalid) as caught:
        parse_plan_text(text, "g.yaml")
    return [str(p) for p in caught.value.problems]


def test_the_whale_plan_loads_with_both_guards():
    plan = parse_plan_text(WHALE_PLAN, "w.yaml")
    assert [name for name, _ in plan.cost_guard.guards()] == ["cost_cap", "margin_floor"]
    assert plan.cost_guard.margin_floor.on_breach.model == "claude-haiku-4-5"


def test_every_bad_guard_is_named_at_its_field_and_all_are_collected():
    found = problems(HEAD + """cost_guard:
  margin_floor: {percent: 120, on_breach: {policy: deny}}
  cost_cap: {amount: 10, on_breach: {policy: downgrade}}
  task_cost: {amount: 0, on_breach: {policy: alert}}
""")
    text = "\n".join(found)
    assert "cost_guard.margin_floor.percent" in text and "100" in text
    assert "cost_guard.cost_cap.on_breach.model: Field required" in text  # a downgrade names its model
    assert "cost_guard.task_cost.amount" in text
    assert all(p.startswith("g.yaml:") for p in found)


def test_a_negative_margin_floor_a_missing_policy_and_an_empty_guard_are_errors():
    text = "\n".join(problems(HEAD + "cost_guard:\n  margin_floor: {percent: -1}\n"))
    assert "cost_guard.margin_floor.percent" in text and "cost_guard.margin_floor.on_breach" in text
    assert "set at least one of cost_cap, margin_floor, task_cost" in "\n".join(problems(HEAD + "cost_guard: {}\n"))


def test_a_task_cost_guard_needs_agent_limits_and_a_rate_limit_needs_its_window():
    text = "\n".join(problems(HEAD + """cost_guard:
  task_cost: {amount: 5, on_breach: {policy: rate_limit}}
""" ))
    assert "cost_guard.task_cost: a task cost guard needs agent_limits" in text
    assert "cost_guard.task_cost.on_breach: Field required" in text  # rate_limit: {limit, window_seconds}
