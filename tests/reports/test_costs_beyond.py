"""Costs beyond tokens in the margin report (issue 15 item 5), on SQLite and PostgreSQL: AI
cost (events with token counts) and other cost (tool calls, vector-store queries, costs the
app reports) apart, the plan's monthly overhead per seat (prorated over the seat history)
and per distinct user, and the cost per outcome beside the revenue per outcome."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

from billing.catalog import Catalog, parse_plan_text
from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from billing.reports.margins import margin_report

ROOT = Path(__file__).resolve().parents[2]
OCT = datetime(2026, 10, 1, tzinfo=UTC)
AS_OF = datetime(2026, 11, 5, tzinfo=UTC)


def _catalog() -> Catalog:
    text = (ROOT / "plans" / "support-resolutions.yaml").read_text()
    text = text.replace("plan: support-resolutions", "plan: resolutions-overhead")
    return Catalog([parse_plan_text(text + 'overhead: {per_seat: "3.10", per_user: "0.25"}\n', "o.yaml")])


def _at(hours: float) -> str:
    return (OCT + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def test_ai_cost_other_cost_overhead_and_cost_per_outcome(any_engine):
    catalog = _catalog()
    acc = Accounts(any_engine, catalog)
    acc.create_customer("desk", now=OCT)
    acc.subscribe("desk", "resolutions-overhead", at=OCT, seats=2)
    acc.change_seats("desk", 4, at=datetime(2026, 10, 17, tzinfo=UTC))
    events = []
    for i in range(10):  # 10 model calls of 100k in / 10k out on haiku: $0.15 each, 3 users
        events.append({"id": f"llm-{i}", "customer": "desk", "type": "llm.call", "timestamp": _at(i + 1),
                       "properties": {"model": "claude-haiku-4-5", "input_tokens": 100_000, "output_tokens": 10_000,
                                      "user": f"u{i % 3}"}})
    for i in range(4):  # tool calls and vector-store queries report their cost
        events.append({"id": f"tool-{i}", "customer": "desk", "type": "tool.call", "timestamp": _at(20 + i),
                       "properties": {"tool": "crm_lookup", "cost": "0.002", "user": "u9"}})
        events.append({"id": f"vec-{i}", "customer": "desk", "type": "vector.query", "timestamp": _at(30 + i),
                       "properties": {"store": "pinecone", "cost": "0.0005"}})
    for i in range(5):  # 5 resolutions
        events.append({"id": f"res-{i}", "customer": "desk", "type": "outcome", "timestamp": _at(40 + i),
                       "properties": {"outcome": "resolution", "outcome_id": f"t{i}"}})
    Ledger(any_engine, catalog, clock=lambda: AS_OF).record(events)
    report = margin_report(any_engine, catalog, "2026-10", as_of=AS_OF)
    (c,) = report.customers
    out = json.loads(json.dumps(report.to_json()))
    row = out["customers"][0]
    ai, other = D("1.5"), 4 * D("0.002") + 4 * D("0.0005")
    assert c.cost == ai + other
    assert (D(row["ai_cost"]), D(row["other_cost"])) == (ai, other)
    # seats: 2 for Oct 1-17 (16 days), 4 for Oct 17-Nov 1 (15 days) of 31; users u0, u1, u2, u9
    seats = D("3.10") * (2 * D(16) / D(31) + 4 * D(15) / D(31))
    overhead = seats + 4 * D("0.25")
    assert abs(D(row["overhead"]) - overhead) < D("1e-20") and row["users"] == 4
    assert D(row["margin_after_overhead"]) == D(row["revenue"]) - c.cost - D(row["overhead"])
    assert row["outcomes"] == 5
    assert D(row["cost_per_outcome"]) == (c.cost / 5).quantize(D("0.000001"))
    assert D(row["revenue_per_outcome"]) == (c.revenue / 5).quantize(D("0.000001"))
    assert D(out["costs"]["ai_cost"]) == ai and D(out["costs"]["overhead"]) == D(row["overhead"])
