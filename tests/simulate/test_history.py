"""`billing simulate --history`: re-rate a past month from the ledger next to what was billed,
without touching invoices, counters or events."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from billing.catalog import load_plan_file
from billing.costs import CostBook
from billing.simulate.history import simulate_history
from tests.support.margins import _costs, _invoiced, _snapshot, seed_ledger

D = Decimal
ROOT = Path(__file__).resolve().parents[2]
PLANS = [ROOT / "plans" / f for f in ("support-chatbot.yaml", "token-api.yaml", "team-credits.yaml")]


@pytest.fixture(scope="module")
def seeded(module_engine, module_db_url):  # noqa: F811
    return {**seed_ledger(module_engine), "engine": module_engine, "url": module_db_url}


def test_history_rerates_and_compares_with_invoices(seeded):
    engine = seeded["engine"]
    before = _snapshot(engine)
    plans = [load_plan_file(p) for p in PLANS]
    sim = simulate_history(engine, "2026-10", plans, CostBook.load_default())
    assert _snapshot(engine) == before
    invoiced = _invoiced(engine)
    assert sim.source == "history"
    for plan in plans:
        rows = {r.customer: r for r in sim.results[plan.ref]}
        assert set(rows) == {"chat", "api", "team", "free", "heavy"}
        for customer, total in invoiced.items():
            assert rows[customer].actual == total
            assert rows[customer].actual_cost == _costs(seeded["events"], customer)
            # re-rating under the plan the customer is actually on reproduces the invoice
            if rows[customer].actual_plan == plan.ref:
                assert rows[customer].revenue == total, (customer, plan.ref)
        assert rows["free"].actual is None and rows["free"].actual_plan == "(no subscription)"
        assert rows["chat"].cost == _costs(seeded["events"], "chat")
    # segments are usage bands by October interactions: heavy 0, free 10, api 30, team 40, chat 165
    bands = {r.customer: r.segment for r in sim.results[plans[0].ref]}
    assert bands == {"heavy": "light (<= P25)", "free": "light (<= P25)", "api": "moderate (P25-P50]",
                     "team": "regular (P50-P90]", "chat": "regular (P50-P90]"}
    by_plan = sim.groups(plans[0].ref, "actual_plan")
    assert set(by_plan) == {"support-chatbot@v1", "token-api@v1", "team@v1", "(no subscription)"}
    assert by_plan["support-chatbot@v1"].actual == invoiced["chat"] + invoiced["heavy"]
    assert sum((a.revenue for a in sim.segments(plans[0].ref).values()), D(0)) == sim.total(plans[0].ref).revenue
    billed, _ = sim.actual_totals()
    assert billed == sum(invoiced.values())
    movers = sim.movers(plans[2].ref)
    assert movers and all(delta == r.revenue - ref for r, ref, delta in movers)


def test_simulate_cli_history_json(seeded, monkeypatch):
    from billing.cli.simulate import simulate
    from billing.config import get_settings

    monkeypatch.setenv("BILLING_DATABASE_URL", seeded["url"])
    get_settings.cache_clear()
    app = typer.Typer()
    app.command("simulate")(simulate)
    app.command("noop")(lambda: None)
    before = _snapshot(seeded["engine"])
    try:
        result = CliRunner().invoke(app, ["simulate", "--history", "2026-10", "--plan", str(PLANS[0]),
                                          "--plan", str(PLANS[2]), "--cache-hit", "0.5", "--json"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["source"] == "history" and data["levers"] == {"cache_hit_rate": "0.5"}
    assert D(data["actual"]["billed"]) == sum(_invoiced(seeded["engine"]).values())
    plan = data["plans"][0]
    assert plan["plan"]["ref"] == "support-chatbot@v1"
    # the cache lever lowers cost below what the ledger stored
    assert D(plan["total"]["cost_exact"]) < D(plan["total"]["baseline_cost"])
    assert _snapshot(seeded["engine"]) == before


def test_sql_aggregation_and_event_rerating_agree(seeded):
    """Without levers history aggregates in SQL (the close's own query); with levers it
    re-rates the events in Python. On identity levers both give the same simulation."""
    from billing.simulate.core import simulate
    from billing.simulate.history import history_inputs

    engine = seeded["engine"]
    plans = [load_plan_file(p) for p in sorted((ROOT / "plans").glob("*.yaml"))]
    book = CostBook.load_default()
    fast = simulate_history(engine, "2026-10", plans, book)
    period, inputs = history_inputs(engine, "2026-10", plans)
    slow = simulate(plans, inputs, period, book, source="history")
    for plan in plans:
        a = [(r.customer, r.segment, r.revenue, r.cost, r.fees, r.throttled, r.actual, r.actual_plan, r.interactions)
             for r in fast.results[plan.ref]]
        b = [(r.customer, r.segment, r.revenue, r.cost, r.fees, r.throttled, r.actual, r.actual_plan, r.interactions)
             for r in slow.results[plan.ref]]
        assert a == b, plan.ref
