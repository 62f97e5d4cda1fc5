"""The worked examples of the design brief, reproduced exactly (Decimal) by the simulator
from the example specs in ``examples/`` (each spec documents its assumptions)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
import yaml

from billing.costs import event_cost
from billing.events import UsageEvent
from billing.reports.stats import round_pct
from billing.simulate.core import simulate
from billing.simulate.levers import Levers, Route
from billing.simulate.spec import load_spec, parse_spec, spec_plans

D = Decimal
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
AT = datetime(2026, 10, 3, 12, 0, tzinfo=UTC)


def run(name: str, *, levers: Levers | None = None, spec=None):
    path = EXAMPLES / f"{name}.yaml"
    spec = spec or load_spec(path)
    plans = spec_plans(spec, path)
    sim = simulate(plans, spec.customer_inputs(), spec.the_period(), spec.book(),
                   levers=spec.levers if levers is None else levers)
    return spec, plans, sim


def call_cost(book, model: str, input_tokens: int, output_tokens: int) -> Decimal:
    event = UsageEvent(id="e", customer="c", type="llm.call", timestamp=AT,
                       properties={"model": model, "input_tokens": input_tokens, "output_tokens": output_tokens})
    return event_cost(event, book)


@pytest.fixture(scope="module")
def chatbot():
    return run("support-chatbot-cost")


@pytest.fixture(scope="module")
def creep():
    return run("feature-creep")


@pytest.mark.slow
def test_support_chatbot_costs_922_50_a_month(chatbot):
    spec, plans, sim = chatbot
    assert call_cost(spec.book(), "chat-model", 2100, 400) == D("0.0123") == D(spec.expect["cost_per_message"])
    total = sim.total(plans[0].ref)
    assert total.customers == 5000
    assert sum(r.interactions for r in sim.results[plans[0].ref]) == 75_000
    assert total.cost == D("922.50") == D(spec.expect["monthly_cost"])
    # under the support-chatbot plan every customer pays the $20 base (15 < 100 included)
    assert total.revenue == D("100000.00")


@pytest.mark.slow
def test_feature_creep_costs_4522_50_a_month_4_9x(chatbot, creep):
    spec, plans, sim = creep
    book = spec.book()
    assert call_cost(book, "chat-model", 2100 + 3000 + 4000, 400 + 200) == D("0.0363") == D(spec.expect["base_message_cost"])
    assert call_cost(book, "premium-model", 5000, 600) == D("0.12") == D(spec.expect["premium_query_extra_cost"])
    ref = plans[0].ref
    escalations = sum(1 for c in spec.customer_inputs()[:10] for e in c.events if e.id.startswith("esc-"))
    assert escalations == 10 * 3  # exactly 20% of each customer's 15 messages
    total = sim.total(ref)
    assert total.cost == D("4522.50") == D(spec.expect["monthly_cost"])
    assert total.cost == 75_000 * D("0.0363") + 15_000 * D("0.12")
    original = chatbot[2].total(chatbot[1][0].ref).cost
    ratio = (total.cost / original).quantize(D("0.1"), ROUND_HALF_UP)
    assert ratio == D("4.9") == D(spec.expect["ratio_to_original"])


def test_feature_creep_literal_reading_costs_4900_50():
    """20% of the 9,100/600-token queries on the $15/$75 model instead: $0.1815 a query."""
    path = EXAMPLES / "feature-creep.yaml"
    data = yaml.safe_load(path.read_text())
    data["segments"]["chatbot"].pop("escalation")
    data["segments"]["chatbot"]["customers"] = 500  # a tenth of the population: exact per customer
    spec = parse_spec(yaml.safe_dump(data))
    assert call_cost(spec.book(), "premium-model", 9100, 600) == D("0.1815")
    levers = Levers(route=Route(to={"premium-model": D("0.2")}))
    _, plans, sim = run("feature-creep", levers=levers, spec=spec)
    total = sim.total(plans[0].ref)
    assert total.baseline_cost == 500 * 15 * D("0.0363")
    assert total.cost * 10 == D("4900.50") == D(load_spec(path).expect["literal_reading_monthly_cost"])


def test_margin_trap():
    spec, plans, sim = run("margin-trap")
    ref = plans[0].ref
    book = spec.book()
    assert call_cost(book, "trap-model", 10_000, 4_000) == D("0.09") == D(spec.expect["cost_per_interaction"])
    by_segment = {r.segment: r for r in sim.results[ref]}
    expected = {"30": (D("2.70"), 87), "150": (D("13.50"), 33), "500": (D("45.00"), -125), "2000": (D("180.00"), -800)}
    for segment, (cost, pct) in expected.items():
        r = by_segment[segment]
        assert r.revenue == D("20.00")
        assert r.cost == cost
        assert round_pct(r.margin_pct, 0) == D(pct) == D(spec.expect["margin_pct"][segment])
    # the unrounded margins: 86.5% and 32.5% round half away from zero
    assert by_segment["30"].margin_pct == D("86.5") and by_segment["150"].margin_pct == D("32.5")


@pytest.mark.slow
def test_model_routing_saves_85_percent():
    spec, plans, sim = run("model-routing")
    total = sim.total(plans[0].ref)
    assert total.baseline_cost == D("150.00") == D(spec.expect["daily_cost_all_frontier"])
    assert total.cost == D("22.75") == D(spec.expect["daily_cost_routed"])
    saving = (1 - total.cost / total.baseline_cost) * 100
    assert round_pct(saving, 0) == D(85) == D(spec.expect["saving_pct"])
    # the split is exact: 7,000 / 2,000 / 1,000 calls
    from billing.simulate.levers import apply_levers

    events = [e for c in spec.customer_inputs() for e in apply_levers(c.events, spec.levers) if e.type == "llm.call"]
    counts = {}
    for e in events:
        counts[e.properties["model"]] = counts.get(e.properties["model"], 0) + 1
    assert counts == {"small-model": 7000, "mid-model": 2000, "frontier-model": 1000}
    # without the lever everything stays on the $15 model
    _, _, plain = run("model-routing", levers=Levers())
    assert plain.total(plans[0].ref).cost == D("150.00")
