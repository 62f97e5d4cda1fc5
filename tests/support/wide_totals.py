"""The big-usage plan and its events at the widest values (10^12 tokens, $10^6 of cost per
event): the wide-totals tests and their concurrent variant share them."""

from __future__ import annotations

from datetime import UTC, datetime

from billing.catalog import Catalog, parse_plan_text

PLAN = """
plan: big-usage
version: 1
name: Big usage (tests)
effective_from: 2026-01-01T00:00:00Z
currency: USD
meters:
  - {key: tokens, name: Tokens, event_type: llm.call, aggregation: sum, property: input_tokens}
  - {key: peak, name: Peak output, event_type: llm.call, aggregation: max, property: output_tokens}
  - {key: calls, name: Calls, event_type: llm.call, aggregation: count}
charges:
  - {key: tokens, name: Tokens, meter: tokens, price: {model: per_unit, unit_price: "0.000001"}}
  - {key: inference, name: Inference, meter: calls, price: {model: cost_plus, markup: "0.25"}}
"""
CATALOG = Catalog([parse_plan_text(PLAN, "big-usage.yaml")])
OCT, NOV = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
OCT_US, NOV_US = 1790812800000000, 1793491200000000
INGEST_AT = datetime(2026, 10, 20, tzinfo=UTC)
MAX_TOKENS, MAX_COST = 10**12, 10**6


def big_event(i: int, customer: str = "big") -> dict:
    return {"id": f"e{i}", "customer": customer, "type": "llm.call", "timestamp": f"2026-10-{1 + i:02d}T12:00:00Z",
            "properties": {"input_tokens": MAX_TOKENS, "output_tokens": MAX_TOKENS - i, "cost": str(MAX_COST),
                           "task": "t1"}}
