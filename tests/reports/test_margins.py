"""Margin reports and forecasts over a real ledger (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from billing.reports.forecast import elapsed_fraction, forecast
from billing.reports.margins import margin_report
from tests.support.margins import NOV, OCT, _costs, _invoiced, _snapshot, seed_ledger

D = Decimal
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def seeded(module_engine):  # noqa: F811
    """One seeded ledger per backend for the whole module: every test here only reads."""
    return {**seed_ledger(module_engine), "engine": module_engine}


def test_margins_closed_period(seeded):
    engine = seeded["engine"]
    before = _snapshot(engine)
    report = margin_report(engine, seeded["catalog"], "2026-10", as_of=seeded["now"], whale_margin_pct=D(50))
    assert _snapshot(engine) == before  # read-only
    rows = {c.customer: c for c in report.customers}
    invoiced = _invoiced(engine)
    assert set(invoiced) == {"chat", "api", "team", "heavy"}
    for customer, total in invoiced.items():
        assert rows[customer].revenue == total and rows[customer].source == "invoiced"
        assert rows[customer].cost == _costs(seeded["events"], customer)
    assert rows["chat"].revenue == D("20.50")  # $20 + 10 messages x $0.05 (search is not metered)
    assert rows["chat"].interactions == 165 and rows["chat"].margin == rows["chat"].revenue - rows["chat"].cost
    assert rows["free"].source == "none" and rows["free"].revenue == 0 and rows["free"].cost > 0
    assert rows["heavy"].revenue == D("20.00") and rows["heavy"].cost == 0
    assert report.cost == _costs(seeded["events"])
    whales = [w.customer for w in report.whales()]
    assert whales[0] == "free"
    assert all(w.cost > w.revenue or w.margin_pct < 50 for w in report.whales())
    # segments: the P25 / P50 / P90 / P99 customer by interactions, each with its own figures
    # (heavy 0, free 10, api 30, team 40, chat 165 October calls; nearest rank of 5)
    segments = report.usage_segments()
    assert [(s.name, s.percentile, s.customer.customer) for s in segments] == [
        ("light", 25, "free"), ("median", 50, "api"), ("heavy", 90, "chat"), ("power", 99, "chat")]
    chat = rows["chat"]
    assert segments[2].sentence() == (f"heavy user (P90): 165 interactions, ${chat.cost.quantize(D('0.01'))} cost, "
                                      f"$20.50 revenue, {round(chat.margin_pct):.0f}% margin")
    per_metric = report.percentiles()
    assert per_metric["interactions"]["p50"] == D(30) and per_metric["interactions"]["p99"] == D(165)
    data = json.loads(json.dumps(report.to_json()))
    assert data["totals"]["customers"] == 5 and "free" in data["whales"]
    assert data["totals"]["revenue"] == f"{sum(invoiced.values()):.2f}"  # money as cents text


@pytest.mark.parametrize("prop", ["feature", "model", "user", "task"])
def test_breakdowns_sum_to_totals(seeded, prop):
    engine = seeded["engine"]
    report = margin_report(engine, seeded["catalog"], "2026-10", as_of=seeded["now"], by=prop)
    assert sum((r.cost for r in report.breakdown), D(0)) == report.cost
    assert sum((r.revenue for r in report.breakdown), D(0)) == report.revenue
    keys = {r.key for r in report.breakdown}
    for customer in {c for c, _ in report.per_customer_breakdown}:  # whole cents adding up per customer
        mine = [r.revenue for c, r in report.per_customer_breakdown if c == customer]
        assert sum(mine) == next(c.revenue for c in report.customers if c.customer == customer)
        assert all(v == v.quantize(D("0.01")) for v in mine)
    if prop == "feature":
        # "(none)": heavy's October fee, with no October usage to allocate it to
        assert keys == {"support-chat", "search", "agent", "coding", "(none)"}
        chat = [r for c, r in report.per_customer_breakdown if c == "chat"]
        # chat's $20.50 split by share of its events, 55 search / 110 support-chat, in cents
        assert {r.key: r.revenue for r in chat} == {"search": D("6.83"), "support-chat": D("13.67")}
        none = next(r for r in report.breakdown if r.key == "(none)")
        assert none.revenue == D("20.00") and none.cost == 0  # heavy's fee
    if prop == "model":
        assert keys == {"claude-sonnet-4-5", "gpt-5-mini", "claude-opus-4-1", "(none)"}
    by_cost = margin_report(engine, seeded["catalog"], "2026-10", as_of=seeded["now"], by=prop, allocate="cost")
    assert sum((r.revenue for r in by_cost.breakdown), D(0)) == report.revenue
    text = report.to_csv()
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert {r["section"] for r in parsed} == {"customer", f"by:{prop}", f"customer-by:{prop}"}


def test_open_period_is_rated_to_date_and_forecast(seeded):
    engine = seeded["engine"]
    catalog, now = seeded["catalog"], seeded["now"]
    before = _snapshot(engine)
    report = margin_report(engine, catalog, "2026-11", as_of=now)
    rows = {c.customer: c for c in report.customers}
    assert rows["chat"].source == "rated" and rows["chat"].revenue == D("20.00")  # 60 < 100 included
    # heavy: 400 messages by Nov 9 20:00 (all before as_of): 300 past included x 0.05 = 15
    assert rows["heavy"].revenue == D("35.00")
    assert rows["chat"].cost == _costs(seeded["events"], "chat", NOV, now)
    rows_f = {r.customer: r for r in forecast(engine, catalog, now)}
    assert _snapshot(engine) == before
    f = rows_f["chat"]
    assert f.elapsed.quantize(D("0.000001")) == D("0.333333")
    assert f.projected_usage["messages"] == 180 and f.projected_invoice == D("24.00")
    assert f.flags == ["charge:messages:included"]  # 180 projected of 100 included
    h = rows_f["heavy"]
    assert h.projected_usage["messages"] == 1200
    assert h.projected_invoice == D("70.00")  # $20 + overage capped at $50
    assert "charge:messages:spend_cap" in h.flags
    # team: credits absorb usage; a projected invoice at least the seat fees
    assert rows_f["team"].projected_invoice >= D("60.00")
    assert json.loads(json.dumps([r.to_json() for r in rows_f.values()]))


def test_elapsed_fraction():
    assert elapsed_fraction(OCT, OCT, NOV) == 0
    assert elapsed_fraction(NOV, OCT, NOV) == 1
    assert elapsed_fraction(OCT + timedelta(days=15, hours=12), OCT, NOV) == D("0.5")


def test_forecast_crossings_budget_and_plan_spend_cap():
    from billing.catalog import load_plan_file
    from billing.rating.types import MeterTotals
    from billing.reports.forecast import crossings

    plan = load_plan_file(ROOT / "plans" / "team-credits.yaml")  # budget 1500 (50/80/100%), cap 2000
    t0 = OCT

    def flags(tokens_so_far: int, factor: str = "2") -> list[tuple[str, str, bool]]:
        usage = {"input_tokens": MeterTotals(D(tokens_so_far), 1)}
        return [(c.subject, str(c.threshold), c.reached_now)
                for c in crossings(plan, usage, 2, D(factor), t0, t0 + timedelta(days=15))]

    assert flags(500_000) == []
    # usage spend is what the quota's budget alerts measure: 200M tokens projected = $1,200 of usage
    # $600 so far, $1,200 projected: half the $2,000 cap, 50% and 80% of the $1,500 budget
    assert flags(100_000_000) == [("spend_cap", "50", False), ("budget", "50", False), ("budget", "80", False)]
    got = flags(200_000_000)  # $1,200 so far, $2,400 projected: past the cap and the budget
    assert got == [("spend_cap", "50", True), ("spend_cap", "80", False), ("spend_cap", "100", False),
                   ("budget", "50", True), ("budget", "80", True), ("budget", "100", False)]


def test_forecast_before_any_time_elapsed_projects_nothing(seeded):
    rows = forecast(seeded["engine"], seeded["catalog"], NOV)
    assert rows == []  # f = 0 for every current window: no run rate yet


def test_margins_as_of_before_the_close_rates_to_date(seeded):
    """As of Oct 20 the October invoices did not exist yet: revenue is rated to Oct 20 and the
    cost counts the events up to then."""
    engine, catalog = seeded["engine"], seeded["catalog"]
    at = OCT + timedelta(days=19)
    report = margin_report(engine, catalog, "2026-10", as_of=at)
    rows = {c.customer: c for c in report.customers}
    assert {c.source for c in report.customers if c.customer != "free"} == {"rated"}
    assert rows["chat"].cost == _costs(seeded["events"], "chat", OCT, at)
    assert rows["chat"].revenue == D("20.00")  # 114 calls by then, 76 support-chat: under the 100 included
    later = margin_report(engine, catalog, "2026-10", as_of=seeded["now"])
    assert {c.customer: c.source for c in later.customers}["chat"] == "invoiced"


def test_the_report_runs_with_its_own_work_mem_on_postgresql(seeded, monkeypatch):
    """PostgreSQL: the report's transaction sets work_mem (``BILLING_REPORT_WORK_MEM``) so the
    wide rollup aggregate hashes in memory; the setting ends with the transaction."""
    import billing.reports.margins as margins_module

    engine = seeded["engine"]
    if engine.dialect.name != "postgresql":
        pytest.skip("work_mem is PostgreSQL's")
    seen = []
    customers = margins_module.repo.customers

    def spy(conn):
        seen.append(conn.exec_driver_sql("SHOW work_mem").scalar())
        return customers(conn)

    monkeypatch.setattr(margins_module.repo, "customers", spy)
    margin_report(engine, seeded["catalog"], "2026-10", as_of=seeded["now"])
    assert seen == ["64MB"]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW work_mem").scalar() != "64MB"
