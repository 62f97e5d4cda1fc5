"""Budget-aware agents: ``agent_limits.max_retries`` / ``max_depth`` judge the call's
``retry`` / ``depth`` (the wrapper also records them on the call's event), in the pure
decision and through ``Quota`` and the HTTP API; the decision says what the task has left."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.catalog import Catalog, PlanInvalid, parse_plan_text
from billing.errors import BillingError, ErrorCode
from billing.ledger.accounts import Accounts
from billing.quota.decide import QuotaRequest, TaskUsage, UsageState, decide
from billing.reservations.holds import Quota
from tests.support.quota import NOW, T0, Clock

AGENT_PLAN = """
plan: agents
name: Agents
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: steps, event_type: agent.step}
charges:
  - {key: steps, meter: steps, price: {model: per_unit, unit_price: 0.01}}
agent_limits: {max_steps: 10, max_retries: 2, max_depth: 1}
"""
PLAN = parse_plan_text(AGENT_PLAN, "agents.yaml")


def state(task: TaskUsage | None = None) -> UsageState:
    return UsageState(now=NOW, period_start=T0, period_end=T0.replace(month=11), task=task)


def test_retries_and_depth_past_their_maxima_are_denied_with_or_without_a_task():
    ok = decide(PLAN, state(TaskUsage(steps=4)), QuotaRequest("acme", "steps", task="t", retry=2, depth=1))
    assert ok.outcome == "allow" and ok.task == {"steps": 6, "tokens": None, "cost": None}
    retried = decide(PLAN, state(), QuotaRequest("acme", "steps", task="t", retry=3))
    assert (retried.outcome, retried.reason) == ("deny", "task_limit") and "retry 3 > 2" in retried.message
    deep = decide(PLAN, state(), QuotaRequest("acme", "steps", depth=2))  # no task named: judged all the same
    assert (deep.outcome, deep.reason) == ("deny", "task_limit") and "depth 2 > 1" in deep.message
    assert decide(PLAN, state(), QuotaRequest("acme", "steps")).outcome == "allow"  # neither given: not judged


def test_negative_maxima_are_plan_errors():
    with pytest.raises(PlanInvalid) as bad:
        parse_plan_text(AGENT_PLAN.replace("max_retries: 2, max_depth: 1", "max_retries: -1, max_depth: -2"), "a.yaml")
    text = str(bad.value)
    assert "agent_limits.max_retries" in text and "agent_limits.max_depth" in text
    only = parse_plan_text(AGENT_PLAN.replace("max_steps: 10, max_retries: 2, max_depth: 1", "max_depth: 0"), "a.yaml")
    assert only.agent_limits.max_depth == 0  # a limit by itself is enough


def test_quota_and_http_take_retry_and_depth(sqlite_engine):
    catalog = Catalog([PLAN])
    acc = Accounts(sqlite_engine, catalog)
    acc.create_customer("acme", now=T0)
    acc.subscribe("acme", "agents", at=T0)
    quota = Quota(sqlite_engine, catalog, clock=Clock())
    r = quota.reserve("acme", "steps", task="t1", retry=1, depth=1, request_id="r1")
    assert r.granted and r.decision.task["steps"] == 10
    assert quota.reserve("acme", "steps", task="t1", retry=1, depth=1, request_id="r1").replayed
    with pytest.raises(BillingError) as conflict:  # a replay asking for another retry is another request
        quota.reserve("acme", "steps", task="t1", retry=2, depth=1, request_id="r1")
    assert conflict.value.code == ErrorCode.CONFLICT
    with pytest.raises(BillingError) as bad:
        quota.check("acme", "steps", retry=-1)
    assert bad.value.code == ErrorCode.VALIDATION
    client = TestClient(create_app(sqlite_engine, catalog, clock=Clock(), context_ttl=0, key_cache_ttl=0),
                        headers={"Authorization": f"Bearer {create_key(sqlite_engine, 'admin')[1]}"})
    body = client.post("/v1/quota/check", json={"customer": "acme", "meter": "steps", "task": "t1", "depth": 2}).json()
    assert (body["outcome"], body["reason"]) == ("deny", "task_limit")
    assert body["task"] == {"steps": 9, "tokens": None, "cost": None}  # r1's step is held
    assert client.post("/v1/quota/check", json={"customer": "acme", "meter": "steps", "retry": -1}).status_code == 422
    quota.close()
