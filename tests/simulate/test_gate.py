"""The quota replay (``billing.simulate.gate``) and the semantic-cache lever: a simulation
under a fast/slow plan costs what the plan would really cost."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from billing.catalog import load_plan_file, parse_plan_text
from billing.costs import CostBook
from billing.rating.periods import calendar_month
from billing.simulate.core import simulate
from billing.simulate.gate import gate_events
from billing.simulate.levers import Levers, SemanticCache, apply_semantic_cache
from billing.simulate.sim_event import SimEvent
from billing.simulate.spec import load_spec

D = Decimal
ROOT = Path(__file__).resolve().parents[2]
PERIOD = calendar_month(2026, 10)

PLAN = """
plan: gated
name: Gated
effective_from: 2026-01-01T00:00:00Z
fees: [{{type: flat, key: base, amount: "10"}}]
meters: [{{key: requests, event_type: request}}]
charges:
  - key: requests
    meter: requests
    included: {{pooled: 3}}
    on_exhaustion: {policy}
{extra}
"""


def interactions(n: int, gap_seconds: int = 1, model: str = "big", task: str | None = None) -> list[SimEvent]:
    out = []
    for i in range(n):
        ts = PERIOD.start + timedelta(hours=1, seconds=i * gap_seconds)
        extra = {"task": task} if task else {}
        out.append(SimEvent(f"req-{i}", "c", "request", ts, {"model": model, **extra}))
        out.append(SimEvent(f"llm-{i}", "c", "llm.call", ts, {"model": model, "input_tokens": 1000, **extra}))
    return out


def price(e) -> Decimal:
    if e.type != "llm.call":
        return D(0)
    return D("0.01") if e.properties["model"] == "big" else D("0.001")


def test_block_lets_the_included_interactions_through_and_removes_the_rest():
    plan = parse_plan_text(PLAN.format(policy="{policy: block}", extra=""))
    seen, counts = gate_events(plan, interactions(5), PERIOD, price)
    assert sorted(e.id for e in seen) == ["llm-0", "llm-1", "llm-2", "req-0", "req-1", "req-2"]
    assert (counts.interactions, counts.downgraded, dict(counts.denied)) == (5, 0, {"quota_exhausted": 2})


def test_downgrade_re_models_the_whole_interaction_and_rate_limits_the_slow_lane():
    plan = parse_plan_text(PLAN.format(
        policy="{policy: downgrade, model: small, rate_limit: {limit: 2, window_seconds: 60}}", extra=""))
    seen, counts = gate_events(plan, interactions(8), PERIOD, price)
    models = [(e.id, e.properties["model"]) for e in seen if e.type == "llm.call"]
    # 3 included on the fast lane, then 2 per minute on the slow lane; the rest denied
    assert models == [("llm-0", "big"), ("llm-1", "big"), ("llm-2", "big"), ("llm-3", "small"), ("llm-4", "small")]
    assert all(e.properties["model"] == "small" for e in seen if e.id in ("req-3", "req-4"))
    assert (counts.downgraded, dict(counts.denied)) == (2, {"rate_limited": 3})
    # a minute later the window has room again
    later = gate_events(plan, interactions(5, gap_seconds=61), PERIOD, price)[1]
    assert (later.downgraded, dict(later.denied)) == (2, {})


def test_agent_task_limits_apply():
    plan = parse_plan_text(PLAN.format(policy="{policy: overage}", extra="agent_limits: {max_steps: 3}")
                           .replace("included: {pooled: 3}", 'included: {pooled: 100}\n    price: {model: per_unit, unit_price: "0.1"}'))
    seen, counts = gate_events(plan, interactions(5, task="t1"), PERIOD, price)
    # each interaction is two steps of task t1 (its request and its call): the third would be step 5
    assert dict(counts.denied) == {"task_limit": 3} and len(seen) == 4


def test_a_fast_slow_plan_costs_less_than_the_same_plan_without_the_slow_lane():
    """The issue's check: under cursor-pro (500 fast requests a seat, then claude-haiku-4-5),
    the simulated provider cost is below the same plan whose requests never leave the fast lane."""
    spec = load_spec(ROOT / "examples" / "population.yaml")
    customers = [c for c in spec.customer_inputs() if c.segment == "power"][:1]  # past 500 a seat
    slow = load_plan_file(ROOT / "plans" / "cursor-pro.yaml")
    text = (ROOT / "plans" / "cursor-pro.yaml").read_text()
    start = text.index("    on_exhaustion:")
    end = text.index("budget_alerts:")
    fast_only = parse_plan_text(text[:start] + "    on_exhaustion: {policy: overage}\n"
                                + "    price: {model: per_unit, unit_price: \"0\"}\n" + text[end:]
                                ).model_copy(update={"plan": "cursor-fast-only"})
    book = CostBook.load_default()
    sim = simulate([slow, fast_only], customers, spec.the_period(), book, levers=Levers(enforce_quota=True))
    with_slow, without = sim.total(slow.ref), sim.total(fast_only.ref)
    assert with_slow.cost < without.cost
    assert sim.quota(slow.ref).downgraded > 0 and sim.quota(fast_only.ref).downgraded == 0
    # without the replay, both plans cost what the usage cost as recorded
    plain = simulate([slow], customers, spec.the_period(), book)
    assert plain.total(slow.ref).cost == without.cost
    assert with_slow.revenue == plain.total(slow.ref).revenue  # the slow lane is free: revenue unchanged


def test_semantic_cache_serves_an_exact_share_at_the_cost_per_hit():
    events = [e for e in interactions(8) if e.type == "llm.call"]
    served = apply_semantic_cache(events, SemanticCache(share=D("0.25"), cost_per_hit=D("0.0004")))
    hits = [e for e in served if e.properties.get("semantic_cache_hit")]
    assert len(hits) == 2 and all(e.properties["cost"] == "0.0004" for e in hits)
    assert [e.properties["input_tokens"] for e in served] == [1000] * 8  # the customer still got every answer
    spec = load_spec(ROOT / "examples" / "population.yaml")
    customers = spec.customer_inputs()[:5]
    plan = load_plan_file(ROOT / "plans" / "support-chatbot.yaml")
    book = CostBook.load_default()
    base = simulate([plan], customers, spec.the_period(), book).total(plan.ref)
    cached = simulate([plan], customers, spec.the_period(), book,
                      levers=Levers(semantic_cache=SemanticCache(share=D("0.5"), cost_per_hit=D(0)))).total(plan.ref)
    assert cached.revenue == base.revenue and D("0.4") * base.cost < cached.cost < D("0.6") * base.cost
