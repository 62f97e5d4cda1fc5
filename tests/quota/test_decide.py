"""The pure quota decision: every exhaustion policy, caps, credits, agent limits, dunning,
and properties (monotone in usage; granted holds never exceed the limit)."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import parse_plan_text
from billing.quota import MeterUsage, QuotaRequest, TaskUsage, UnknownMeter, UsageState, decide, rate_window
from billing.rating.arithmetic import included_units, peak_exact
from tests.support.quota import catalog

CAT = catalog()
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
NOW = datetime(2026, 10, 10, 12, 0, 30, tzinfo=UTC)

RATE_PLAN = parse_plan_text("""
plan: ratey
name: Rate limited overage
effective_from: 2026-01-01T00:00:00Z
meters: [{key: calls, event_type: request, aggregation: count}]
charges:
  - key: calls
    meter: calls
    included: {pooled: 10}
    price: {model: per_unit, unit_price: "0.10"}
    on_exhaustion: {policy: rate_limit, rate_limit: {limit: 5, window_seconds: 60}}
""")

VOLUME_PLAN = parse_plan_text("""
plan: vol
name: Volume with cap
effective_from: 2026-01-01T00:00:00Z
meters: [{key: tokens, event_type: llm.call, aggregation: sum, property: input_tokens}]
charges:
  - key: tokens
    meter: tokens
    included: {pooled: 100}
    price:
      model: volume
      tiers: [{up_to: 100, unit_price: "1"}, {up_to: null, unit_price: "0.5"}]
    on_exhaustion: {policy: overage, spend_cap: "120"}
spend_cap: "110"
""")


def state(**kw) -> UsageState:
    kw.setdefault("now", NOW)
    return UsageState(period_start=START, period_end=END, **kw)


def used(meter: str, units, cost="0") -> dict:
    return {meter: MeterUsage(D(units), D(cost), int(D(units)))}


# ------------------------------------------------------------------------ purity

def test_quota_package_is_pure():
    forbidden = ("sqlmodel", "sqlalchemy", "fastapi", "stripe", "httpx", "billing.ledger", "billing.api")
    root = Path(__file__).resolve().parents[2] / "billing" / "quota"
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "now", "utcnow", "today", "time", "monotonic", "perf_counter"):
                pytest.fail(f"{path.name} reads the clock ({node.func.attr}())")


def test_quota_package_imports_nothing_impure_transitively():
    import subprocess
    import sys

    code = ("import sys, billing.quota, billing.quota.alerts, billing.quota.decide\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('sqlmodel', 'sqlalchemy', 'fastapi', 'stripe', "
            "'httpx') or m.startswith(('billing.ledger', 'billing.api'))]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ----------------------------------------------------------------------- policies

def test_included_then_slow_tier_then_rate_limited():
    plan = CAT.get("cursor-pro", 1)
    d = decide(plan, state(usage=used("requests", 998), seats=2), QuotaRequest("c", "requests", model="claude-sonnet-4-5"))
    assert (d.outcome, d.reason, d.lane.tier, d.lane.model) == ("allow", "included", "fast", "claude-sonnet-4-5")
    assert d.remaining == {"requests": D(2)}
    d = decide(plan, state(usage=used("requests", 1000), seats=2), QuotaRequest("c", "requests", model="claude-sonnet-4-5"))
    assert (d.outcome, d.reason, d.lane.tier, d.lane.model) == ("downgrade", "slow_tier", "slow", "claude-haiku-4-5")
    start, end = rate_window(NOW, 60)
    assert d.rate_windows == (("fast_requests", start, end),)
    d = decide(plan, state(usage=used("requests", 1000), seats=2, rate_counts={"fast_requests": 20}),
               QuotaRequest("c", "fast_requests"))
    assert (d.outcome, d.reason) == ("deny", "rate_limited")
    assert d.retry_after == pytest.approx(29.5 + 0.0, abs=1) and d.retry_after <= 60


def test_holds_count_like_usage():
    plan = CAT.get("cursor-pro", 1)
    d = decide(plan, state(usage=used("requests", 400), held={"requests": MeterUsage(D(100))}),
               QuotaRequest("c", "requests"))
    assert d.outcome == "downgrade"


def test_block_denies_until_period_end():
    plan = CAT.get("blocky", 1)
    assert decide(plan, state(usage=used("requests", 99)), QuotaRequest("c", "requests")).outcome == "allow"
    d = decide(plan, state(usage=used("requests", 100)), QuotaRequest("c", "requests"))
    assert (d.outcome, d.reason) == ("deny", "quota_exhausted")
    assert d.retry_after == (END - NOW).total_seconds()
    # a request that does not fit entirely is denied as a whole
    d = decide(plan, state(usage=used("requests", 98)), QuotaRequest("c", "requests", quantity=D(5)))
    assert d.outcome == "deny"


def test_rate_limit_policy_after_included():
    d = decide(RATE_PLAN, state(usage=used("calls", 10)), QuotaRequest("c", "calls"))
    assert (d.outcome, d.reason, d.lane.tier) == ("allow", "overage", "overage")
    assert d.amount == D("0.10")
    d = decide(RATE_PLAN, state(usage=used("calls", 10), rate_counts={"calls": 5}), QuotaRequest("c", "calls"))
    assert (d.outcome, d.reason) == ("deny", "rate_limited")
    assert 0 < d.retry_after <= 60


def test_overage_up_to_charge_spend_cap_with_credits():
    plan = CAT.get("support-chatbot", 1)  # 100 included, $0.05 each, cap $50 -> 1,100 messages
    d = decide(plan, state(usage=used("messages", 1099)), QuotaRequest("c", "messages"))
    assert (d.outcome, d.reason, d.lane.tier) == ("allow", "overage", "overage")
    assert d.spend == D("49.95") and d.remaining_money == D("0.05")
    d = decide(plan, state(usage=used("messages", 1100)), QuotaRequest("c", "messages"))
    assert (d.outcome, d.reason) == ("deny", "spend_cap_reached")
    assert d.retry_after == (END - NOW).total_seconds()
    # $1 of prepaid credit is extra budget before the cap: 20 more messages
    d = decide(plan, state(usage=used("messages", 1119), credit_balance=D(1)), QuotaRequest("c", "messages"))
    assert d.outcome == "allow"
    d = decide(plan, state(usage=used("messages", 1120), credit_balance=D(1)), QuotaRequest("c", "messages"))
    assert d.outcome == "deny"


def test_plan_spend_cap_counts_plan_credits_per_seat():
    plan = CAT.get("team", 1)  # $30 seat with $25 credits per seat; cap $2,000; $0.000006 per input token
    tokens = D(2025) / D("0.000006")  # $2,025 spent: the cap plus one seat's credits
    d = decide(plan, state(usage=used("input_tokens", tokens)), QuotaRequest("c", "input_tokens", quantity=D(1)))
    assert (d.outcome, d.reason) == ("deny", "spend_cap_reached")
    d = decide(plan, state(usage=used("input_tokens", tokens), seats=2), QuotaRequest("c", "input_tokens", quantity=D(1)))
    assert d.outcome == "allow"
    assert d.remaining_money == D(25)


def test_multipliers_weigh_the_model():
    plan = CAT.get("copilot-premium", 1)
    d = decide(plan, state(usage=used("premium_requests", 291)), QuotaRequest("c", "premium_requests", model="claude-opus-4-1"))
    assert d.units == D(10) and d.reason == "overage"
    d = decide(plan, state(usage=used("premium_requests", 291)), QuotaRequest("c", "premium_requests", model="gpt-4.1"))
    assert d.units == D(0) and d.reason == "included"


def test_agent_task_limits():
    plan = CAT.get("token-api", 1)  # 200 steps, 2M tokens, $25 per task
    ok = decide(plan, state(task=TaskUsage(199, 10, D(1))), QuotaRequest("c", "input_tokens", D(1000), task="t"))
    assert ok.outcome == "allow"
    for task, req in [(TaskUsage(200, 0, D(0)), QuotaRequest("c", "input_tokens", D(1), task="t")),
                      (TaskUsage(0, 1_999_500, D(0)), QuotaRequest("c", "input_tokens", D(1000), task="t")),
                      (TaskUsage(0, 0, D(24)), QuotaRequest("c", "llm_calls", task="t", cost=D("1.01")))]:
        d = decide(plan, state(task=task), req)
        assert (d.outcome, d.reason, d.retry_after) == ("deny", "task_limit", None), req
    # without a task id the limits do not apply
    assert decide(plan, state(task=TaskUsage(500)), QuotaRequest("c", "llm_calls")).outcome == "allow"


def test_payment_overdue_denies_after_dunning_days():
    plan = CAT.get("support-chatbot", 1)  # deny after 7 days
    d = decide(plan, state(payment_overdue=True), QuotaRequest("c", "messages"))
    assert (d.outcome, d.reason, d.retry_after) == ("deny", "payment_overdue", None)
    recent = state(payment_failed_at=NOW - timedelta(days=6))
    assert decide(plan, recent, QuotaRequest("c", "messages")).outcome == "allow"
    late = state(payment_failed_at=NOW - timedelta(days=7))
    assert decide(plan, late, QuotaRequest("c", "messages")).reason == "payment_overdue"


def test_unknown_key_and_meter_without_charges():
    plan = CAT.get("token-api", 1)
    with pytest.raises(UnknownMeter):
        decide(plan, state(), QuotaRequest("c", "nope"))
    d = decide(plan, state(usage=used("input_tokens", 10**9)), QuotaRequest("c", "input_tokens", D(5)))
    assert d.outcome == "allow"


def test_volume_spend_is_monotone():
    charge = VOLUME_PLAN.compiled.charges[0]
    amounts = [peak_exact(charge, D(u), D(0), 0, (), D(100)) for u in range(0, 400, 7)]
    assert amounts == sorted(amounts)


def test_decision_json_is_plain():
    d = decide(CAT.get("cursor-pro", 1), state(), QuotaRequest("c", "requests"))
    js = d.to_json()
    assert js["outcome"] == "allow" and js["lane"] == {"tier": "fast", "model": None}
    assert js["remaining"] == {"requests": "500"}  # before this request


# --------------------------------------------------------------------- properties

PLANS = [CAT.get("cursor-pro", 1), CAT.get("support-chatbot", 1), CAT.get("copilot-premium", 1),
         CAT.get("team", 1), CAT.get("token-api", 1), CAT.get("blocky", 1), RATE_PLAN, VOLUME_PLAN]
RANK = {"allow": 0, "downgrade": 1, "deny": 2}
units_st = st.integers(min_value=0, max_value=3000).map(D)


@st.composite
def scenarios(draw):
    plan = draw(st.sampled_from(PLANS))
    meter = draw(st.sampled_from([m.key for m in plan.meters]))
    base = {m.key: draw(units_st) for m in plan.meters}
    extra = {m.key: draw(units_st) for m in plan.meters}
    held = {m.key: draw(st.integers(0, 50).map(D)) for m in plan.meters}
    rate = draw(st.integers(0, 30))
    rate_extra = draw(st.integers(0, 30))
    task = TaskUsage(draw(st.integers(0, 300)), draw(st.integers(0, 3_000_000)), D(draw(st.integers(0, 30))))
    task_extra = TaskUsage(draw(st.integers(0, 50)), draw(st.integers(0, 100_000)), D(draw(st.integers(0, 5))))
    request = QuotaRequest("c", meter, D(draw(st.integers(0, 20))), model=draw(st.sampled_from(
        [None, "claude-opus-4-1", "gpt-4.1"])), task=draw(st.sampled_from([None, "t"])),
        cost=D(draw(st.integers(0, 3))))
    seats = draw(st.integers(1, 3))
    credits = D(draw(st.integers(0, 50)))
    return plan, meter, base, extra, held, rate, rate_extra, task, task_extra, request, seats, credits


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_more_usage_never_turns_deny_into_allow(s):
    plan, meter, base, extra, held, rate, rate_extra, task, task_extra, request, seats, credits = s
    charges = {c.key for c in plan.charges}

    def st_(mult: int) -> UsageState:
        usage = {k: MeterUsage(v + mult * extra[k], (v + mult * extra[k]) / 1000, int(v + mult * extra[k]))
                 for k, v in base.items()}
        t = TaskUsage(task.steps + mult * task_extra.steps, task.tokens + mult * task_extra.tokens,
                      task.cost + mult * task_extra.cost)
        return state(usage=usage, held={k: MeterUsage(v) for k, v in held.items()}, seats=seats,
                     credit_balance=credits, task=t, rate_counts={c: rate + mult * rate_extra for c in charges})

    less, more = decide(plan, st_(0), request), decide(plan, st_(1), request)
    assert RANK[more.outcome] >= RANK[less.outcome], (less, more)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PLANS), st.data())
def test_granted_holds_never_exceed_the_limit(plan, data):
    """Reserve repeatedly (each grant becomes a hold): included-with-block, charge caps and
    the plan cap (+ credits) are never exceeded by granted holds."""
    charge = data.draw(st.sampled_from(plan.charges)) if plan.charges else None
    if charge is None:
        return
    meter = charge.meter
    start = D(data.draw(st.integers(0, 1500)))
    credits = D(data.draw(st.integers(0, 20)))
    usage = {meter: MeterUsage(start, start / 1000, int(start))}
    held = D(0)
    held_cost = D(0)
    for _ in range(data.draw(st.integers(1, 40))):
        q = D(data.draw(st.integers(1, 60)))
        s = state(usage=usage, held={meter: MeterUsage(held, held_cost, 0)}, credit_balance=credits)
        d = decide(plan, s, QuotaRequest("c", charge.key, q))
        if d.granted:
            held += d.units
            held_cost += d.units / 1000
    total = start + held
    inc = included_units(charge, 1)
    compiled = plan.compiled.charge_by_key[charge.key]
    if charge.on_exhaustion.policy == "block" and start <= inc:
        assert total <= inc
    cap = getattr(charge.on_exhaustion, "spend_cap", None)
    plan_credits = sum((c.amount for c in plan.credits), D(0))
    if cap is not None:
        before = peak_exact(compiled, start, start / 1000, int(start), (), inc)
        after = peak_exact(compiled, total, total / 1000, int(start), (), inc)
        if before <= cap + credits + plan_credits:
            assert after <= cap + credits + plan_credits
    if plan.spend_cap is not None and len(plan.charges) == 1:
        before = peak_exact(compiled, start, start / 1000, int(start), (), inc)
        after = peak_exact(compiled, total, total / 1000, int(start), (), inc)
        if cap is not None:
            before, after = min(before, cap), min(after, cap)
        if before <= plan.spend_cap + credits + plan_credits:
            assert after <= plan.spend_cap + credits + plan_credits


@settings(max_examples=400, deadline=None)
@given(scenarios(), st.integers(min_value=0, max_value=int((END - NOW).total_seconds()) - 1),
       st.integers(0, 20))
def test_a_deny_stays_a_deny_until_usage_is_freed_the_period_changes_or_credit_is_granted(s, later, spent):
    """Time passing inside the period (with nothing freed: the same usage, holds, rate-window
    counts and task usage) and credit being used up never turn a deny into an allow."""
    plan, meter, base, _extra, held, rate, _rate_extra, task, _task_extra, request, seats, credits = s
    charges = {c.key for c in plan.charges}

    def at(now: datetime, credit: D) -> UsageState:
        return state(now=now, usage={k: MeterUsage(v, v / 1000, int(v)) for k, v in base.items()},
                     held={k: MeterUsage(v) for k, v in held.items()}, seats=seats, credit_balance=credit, task=task,
                     rate_counts={c: rate for c in charges})

    first = decide(plan, at(NOW, credits), request)
    if first.outcome != "deny":
        return
    then = decide(plan, at(NOW + timedelta(seconds=later), max(D(0), credits - spent)), request)
    assert then.outcome == "deny", (first, then)


def test_a_request_crossing_a_volume_tier_end_is_held_to_the_peak_on_its_way():
    """90 billable units ($1 each: $90) and a request for 20 more: at 110 every unit costs
    $0.5 ($55), but the charge bills $100 on the way (at the tier end, 100): past a $95 cap."""
    plan = parse_plan_text(VOLUME_PLAN.model_dump_json().replace('"120"', '"95"').replace('"110"', '"500"'))
    before = state(usage=used("tokens", 190))  # 90 billable: $90
    d = decide(plan, before, QuotaRequest("c", "tokens", D(20)))  # 110 billable: $55, but $100 at 100
    assert (d.outcome, d.reason) == ("deny", "spend_cap_reached")
    assert d.spend == D(90)
