"""Simulation core: levers (pure event transforms), costing, re-rating, aggregates."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from billing.catalog import load_plan_file, parse_plan_text
from billing.costs import CostBook, ModelPrice
from billing.rating.periods import calendar_month
from billing.rating.types import MeterTotals
from billing.simulate.core import Coster, CustomerInput, CustomerTotals, rate_totals, simulate
from billing.simulate.levers import (
    Allocator, Levers, Route, apply_batch_share, apply_cache_hits, apply_levers, cap_output_tokens, parse_route,
    route_calls)
from billing.simulate.sim_event import SimEvent
from billing.simulate.spec import SpecInvalid, load_spec, parse_spec

D = Decimal
ROOT = Path(__file__).resolve().parents[2]
PERIOD = calendar_month(2026, 10)
T0 = PERIOD.start + timedelta(days=2)


def book() -> CostBook:
    def price(model, day, inp, out, cache=None, batch="0.5"):
        return ModelPrice(model=model, provider="t", effective_from=day, input=D(inp), output=D(out),
                          cache_read=D(cache) if cache else None, cache_write=None, reasoning=None,
                          batch_discount=D(batch), source="test", retrieved=date(2026, 1, 1))
    return CostBook([price("big", date(2025, 1, 1), "10", "40", "1"), price("big", date(2026, 10, 15), "5", "20", "0.5"),
                     price("small", date(2025, 1, 1), "1", "4", "0.1")])


def calls(n: int, customer: str = "c1", model: str = "big", inp: int = 1000, out: int = 100) -> list[SimEvent]:
    out_events = []
    for i in range(n):
        ts = T0 + timedelta(minutes=i)
        out_events.append(SimEvent(f"req-{i}", customer, "request", ts, {"model": model}))
        out_events.append(SimEvent(f"llm-{i}", customer, "llm.call", ts,
                                   {"model": model, "input_tokens": inp, "output_tokens": out}))
    return out_events


# ------------------------------------------------------------------------------ levers

def test_allocator_is_exact_and_deterministic():
    from fractions import Fraction

    a = Allocator([("x", Fraction(7, 10)), ("y", Fraction(2, 10))])
    picks = [a.next() for _ in range(1000)]
    assert picks.count("x") == 700 and picks.count("y") == 200 and picks.count(None) == 100
    b = Allocator([("x", Fraction(7, 10)), ("y", Fraction(2, 10))])
    assert [b.next() for _ in range(1000)] == picks
    for k in range(1, 1001):  # never more than one call away from the exact share
        assert abs(picks[:k].count("x") - Fraction(7, 10) * k) < 1


def test_route_moves_request_and_call_together_and_is_pure():
    events = calls(10)
    before = [dict(e.properties) for e in events]
    routed = route_calls(events, Route(to={"small": D("0.3")}))
    assert [dict(e.properties) for e in events] == before  # input untouched
    models = [(e.type, e.properties["model"]) for e in routed]
    assert sum(1 for t, m in models if t == "llm.call" and m == "small") == 3
    for i in range(10):  # an interaction's request and call agree
        assert routed[2 * i].properties["model"] == routed[2 * i + 1].properties["model"]


def test_route_from_models_only_touches_those():
    events = calls(4, model="small") + calls(4, customer="c2")
    routed = route_calls(events, Route(to={"small": D(1)}, from_models=("nope",)))
    assert [e.properties for e in routed] == [e.properties for e in events]


def test_cache_hits_batch_and_output_cap():
    events = calls(4, inp=1001, out=500)
    cached = apply_cache_hits(events, D("0.5"))
    call = [e for e in cached if e.type == "llm.call"][0]
    assert call.properties["input_tokens"] == 500 and call.properties["cache_read_tokens"] == 501  # half up
    batched = apply_batch_share(events, D("0.5"))
    assert sum(1 for e in batched if e.properties.get("batch")) == 2
    assert all(not e.properties.get("batch") for e in batched if e.type == "request")
    capped = cap_output_tokens(events, 200)
    assert {e.properties.get("output_tokens") for e in capped if e.type == "llm.call"} == {200}


def test_levers_change_cost_as_expected():
    b = book()
    plan = load_plan_file(ROOT / "plans" / "token-api.yaml")
    events = calls(10)  # 10 calls x (1000 in @ $10 + 100 out @ $40) per 1M = 10 x 0.014
    base = simulate([plan], [CustomerInput("c1", events)], PERIOD, b)
    assert base.total(plan.ref).cost == D("0.14")
    cases = [
        (Levers(cost_scale=D("0.5")), D("0.07")),
        (Levers(cost_date=date(2026, 10, 20)), D("0.07")),  # the later, halved price
        (Levers(route=Route(to={"small": D("0.5")})), 5 * D("0.014") + 5 * D("0.0014")),
        (Levers(cache_hit_rate=D("0.5")), 10 * (D("0.005") + D("0.0005") + D("0.004"))),
        (Levers(batch_share=D("1")), D("0.07")),
        (Levers(max_output_tokens=50), 10 * (D("0.01") + D("0.002"))),
    ]
    for levers, expected in cases:
        sim = simulate([plan], [CustomerInput("c1", events)], PERIOD, b, levers=levers)
        total = sim.total(plan.ref)
        assert total.cost == expected, levers
        assert total.baseline_cost == D("0.14")
    combined = apply_levers(events, Levers(route=Route(to={"small": D(1)}), max_output_tokens=10))
    assert {(e.properties["model"], e.properties.get("output_tokens")) for e in combined if e.type == "llm.call"} == {("small", 10)}


def test_parse_route():
    r = parse_route("a=0.7, b=0.2", "x,y")
    assert r.to == {"a": D("0.7"), "b": D("0.2")} and r.from_models == ("x", "y")
    with pytest.raises(ValueError):
        parse_route("a=0.7,b=0.5")
    with pytest.raises(ValueError):
        parse_route("a")


def test_coster_caches_but_stays_exact():
    c = Coster(book())
    e1 = SimEvent("a", "c", "llm.call", T0, {"model": "big", "input_tokens": 1, "output_tokens": 0})
    e2 = SimEvent("b", "c", "llm.call", T0 + timedelta(days=20), {"model": "big", "input_tokens": 1, "output_tokens": 0})
    assert c(e1) == D("0.00001") and c(e2) == D("0.000005")


# ------------------------------------------------------------------------ rating & aggregates

BLOCK_PLAN = """
plan: blocky
name: Blocky
effective_from: 2026-01-01T00:00:00Z
fees:
  - {type: per_seat, key: seat, unit_price: "10.00"}
meters:
  - {key: calls, event_type: llm.call}
charges:
  - key: calls
    meter: calls
    included: {per_seat: 100}
    on_exhaustion: {policy: block}
"""


def test_rate_totals_margins_break_even_and_throttles():
    plan = parse_plan_text(BLOCK_PLAN)
    cursor = load_plan_file(ROOT / "plans" / "cursor-pro.yaml")
    customers = [
        CustomerTotals("a", {"calls": MeterTotals(D(50), 50), "requests": MeterTotals(D(50), 50)}, D("2.00"),
                       segment="light", seats=1, actual=D("10.00")),
        CustomerTotals("b", {"calls": MeterTotals(D(450), 450), "requests": MeterTotals(D(1200), 1200)}, D("35.00"),
                       segment="heavy", seats=2, actual=D("15.00")),
    ]
    sim = rate_totals([plan, cursor], customers, PERIOD)
    a, b = sim.results[plan.ref]
    assert (a.revenue, a.cost, a.margin, a.margin_pct) == (D("10.00"), D("2.00"), D("8.00"), D(80))
    assert b.revenue == D("20.00") and b.margin == D("-15.00")
    assert not a.throttled
    assert [(t.charge, t.policy, t.beyond) for t in b.throttled] == [("calls", "block", D(250))]
    assert [r.customer for r in sim.throttled(cursor.ref)] == ["b"]
    assert sim.throttled(cursor.ref)[0].throttled[0].policy == "downgrade"
    total = sim.total(plan.ref)
    # break-even: fees replaced by p per seat: p x 3 seats = 37 cost -> 12.333...
    assert total.break_even_seat_price().quantize(D("0.0001")) == D("12.3333")
    assert total.break_even_seat_price(D("0.5")).quantize(D("0.01")) == D("24.67")
    segs = sim.segments(plan.ref)
    assert segs["heavy"].margin_pct == D(-75)
    movers = sim.movers(plan.ref)
    assert [(r.customer, delta) for r, _, delta in movers] == [("b", D("5.00")), ("a", D("0.00"))]
    bins = {b.label(): b.count for b in sim.margin_distribution(plan.ref)}
    assert bins["75..90%"] == 1 and bins["-100..-50%"] == 1
    data = json.loads(json.dumps(sim.to_json()))
    assert data["plans"][0]["total"]["margin"] == "-7.00"
    assert data["actual"]["billed"] == "25.00"


def test_simulate_events_matches_rate_totals():
    plan = load_plan_file(ROOT / "plans" / "support-chatbot.yaml")
    b = book()
    events = [SimEvent(e.id, e.customer, e.type, e.timestamp, {**e.properties, "feature": "support-chat"})
              for e in calls(150)]
    sim = simulate([plan], [CustomerInput("c1", events, segment="s")], PERIOD, b, keep_invoices=True)
    r = sim.results[plan.ref][0]
    assert r.revenue == D("20.00") + 50 * D("0.05")
    assert r.cost == 150 * D("0.014")
    assert r.interactions == 150
    assert r.invoice is not None and r.invoice.total == r.revenue


# ---------------------------------------------------------------------------- specs

def test_population_is_reproducible(tmp_path):
    spec = load_spec(ROOT / "examples" / "population.yaml")
    small = parse_spec(
        "period: 2026-10\nseed: 3\nsegments:\n  a: {customers: 3, interactions: 20}\n"
        "  b: {customers: 2, interactions: 50, model_mix: {gpt-5-mini: 1}, exact_mix: true}\n")
    one = [[(e.id, e.timestamp, e.properties) for e in c.events] for c in small.customer_inputs()]
    two = [[(e.id, e.timestamp, e.properties) for e in c.events] for c in small.customer_inputs()]
    other = [[(e.id, e.timestamp, e.properties) for e in c.events] for c in small.customer_inputs(seed=4)]
    assert one == two and one != other
    assert [c.customer for c in small.customer_inputs()] == ["a-00001", "a-00002", "a-00003", "b-00001", "b-00002"]
    assert spec.segments["power"].customers == 5


def test_spec_errors_name_the_path(tmp_path):
    with pytest.raises(SpecInvalid) as err:
        parse_spec("segments:\n  a: {customers: -1, interactions: 3, typo: 1}\nlevers: {cache_hit_rate: 2}\n", "x.yaml")
    message = err.value.message
    assert "x.yaml: segments.a.customers" in message and "segments.a.typo" in message
    assert "levers.cache_hit_rate" in message
    with pytest.raises(SpecInvalid):
        parse_spec("- not a mapping")
    with pytest.raises(SpecInvalid):
        parse_spec("period: 2026-13\nsegments: {a: {customers: 1, interactions: 1}}").the_period()
