"""Budgets at every scope, pure (``billing.quota.budgets``): validation naming each field,
windows in the customer's timezone, which calls count, the tightest budget, and the
decision's verdicts."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from billing.errors import BillingError
from billing.quota.budgets import BudgetUse, parse_budget, window
from billing.quota.decide import QuotaRequest, UsageState, decide
from tests.support.budgets import budget_catalog

PLAN = budget_catalog().get("budgeted", 1)
P0, P1 = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 10, 10, 22, 30, tzinfo=UTC)  # 2026-10-11 00:30 in Paris (CEST, +2)


def _b(bid=1, **kw):
    data = {"name": f"b{bid}", "measure": "units", "meter": "requests", "amount": "10", **kw}
    return parse_budget(data, budget_id=bid)


def test_bad_budgets_name_every_field_and_nothing_else():
    with pytest.raises(BillingError) as exc:
        parse_budget({"name": "", "measure": "tokens", "amount": "-1", "window": "hourly", "enforcement": "hard",
                      "policy": "alert", "timezone": "Mars/Olympus", "scope": {"property": "Team!", "value": ""}})
    fields = sorted(p.split(":")[0] for p in exc.value.details["problems"])
    assert fields == ["amount", "measure", "name", "policy", "scope.property", "scope.value", "timezone", "window"]
    assert exc.value.code == "validation_error"
    with pytest.raises(BillingError, match="model: a downgrade names"):
        parse_budget({"name": "x", "measure": "cost", "amount": "1", "enforcement": "hard", "policy": "downgrade"})
    with pytest.raises(BillingError, match="meter: a units budget"):
        parse_budget({"name": "x", "measure": "units", "amount": "1"})
    with pytest.raises(BillingError, match="amount"):
        parse_budget({"name": "x", "measure": "cost", "amount": 1.5})  # a float is never money
    ok = parse_budget({"name": "x", "measure": "cost", "amount": "2.50", "scope": "tag=beta", "enforcement": "hard"})
    assert (ok.scope_property, ok.scope_value, ok.policy, ok.window) == ("tags", "beta", "deny", "period")


@pytest.mark.parametrize("kind, start, end", [
    ("daily", datetime(2026, 10, 10, 22, tzinfo=UTC), datetime(2026, 10, 11, 22, tzinfo=UTC)),
    ("weekly", datetime(2026, 10, 4, 22, tzinfo=UTC), datetime(2026, 10, 11, 22, tzinfo=UTC)),  # Mon 5 Oct Paris
    ("monthly", datetime(2026, 9, 30, 22, tzinfo=UTC), datetime(2026, 10, 31, 23, tzinfo=UTC)),  # DST ends 25 Oct
    ("period", P0, P1),
])
def test_windows_reset_in_the_customers_timezone(kind, start, end):
    assert window(_b(window=kind), NOW, "Europe/Paris", P0, P1) == (start, end)
    if kind == "daily":  # the budget's own timezone wins
        assert window(_b(window=kind, timezone="UTC"), NOW, "Europe/Paris", P0, P1)[0] == datetime(
            2026, 10, 10, tzinfo=UTC)


def _state(uses, **kw):
    return UsageState(now=NOW, period_start=P0, period_end=P1, budgets=tuple(uses), **kw)


def test_the_decision_denies_past_a_hard_budget_and_returns_the_tightest():
    team = _b(1, enforcement="hard", scope={"property": "team", "value": "research"})
    user = _b(2, amount="100", enforcement="hard", policy="downgrade", model="cheap", scope="user=ann")
    uses = [BudgetUse(team, P0, P1, D(9)), BudgetUse(user, P0, P1, D(50))]
    ask = QuotaRequest("acme", "requests", properties={"team": "research", "user": "ann"})
    d = decide(PLAN, _state(uses), ask)
    assert d.outcome == "allow" and d.budget["name"] == "b1" and d.budget["remaining"] == "1"
    assert dict(d.budget_parts) == {1: 1, 2: 1}
    d = decide(PLAN, _state(uses), QuotaRequest("acme", "requests", D(2), properties={"team": "research"}))
    assert (d.outcome, d.reason) == ("deny", "budget_exceeded") and "b1" in d.message
    assert d.retry_after == (P1 - NOW).total_seconds()
    d = decide(PLAN, _state(uses), QuotaRequest("acme", "requests", D(2), properties={"team": "other"}))
    assert d.outcome == "allow" and d.budget is None  # another team's call counts against neither
    d = decide(PLAN, _state([BudgetUse(user, P0, P1, D(100))]),
               QuotaRequest("acme", "requests", properties={"user": "ann"}))
    assert (d.outcome, d.lane.model, d.reason) == ("downgrade", "cheap", "budget_exceeded")


def test_a_soft_budget_allows_and_reports_the_crossing():
    soft = _b(3, measure="cost", meter=None, amount="1")
    d = decide(PLAN, _state([BudgetUse(soft, P0, P1, D("0.9"))]), QuotaRequest("acme", "requests", cost=D("0.2")))
    assert d.outcome == "allow" and [h.budget.id for h in d.budget_alerts] == [3]


def test_customer_wide_period_budgets_read_the_counters():
    from billing.quota.decide import MeterUsage

    billed = parse_budget({"name": "bill", "measure": "billed", "amount": "1", "enforcement": "hard"}, budget_id=4)
    used = {"requests": MeterUsage(D(190), D(0), 190)}  # 90 past the 100 included: $0.90 billed
    d = decide(PLAN, _state([BudgetUse(billed, P0, P1, None)], usage=used), QuotaRequest("acme", "requests", D(10)))
    assert d.outcome == "allow" and d.budget["used"] == "0.9" and d.spend == D("0.9")
    d = decide(PLAN, _state([BudgetUse(billed, P0, P1, None)], usage=used), QuotaRequest("acme", "requests", D(11)))
    assert d.outcome == "deny"  # $1.01 > $1
