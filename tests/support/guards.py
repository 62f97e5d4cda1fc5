"""Plans with cost guards for the quota, API and race tests: a $200 flat plan whose margin
floor downgrades to a cheaper model and whose cost cap denies (the whale scenario of issue
15), and a plan whose only limit is a provider-cost cap (the cost races)."""

from __future__ import annotations

from billing.catalog import Catalog, parse_plan_text

EXPENSIVE, CHEAP = "claude-opus-4-1", "claude-haiku-4-5"

WHALE_PLAN = f"""
plan: flat-guarded
name: Flat $200 with cost guards
effective_from: 2026-01-01T00:00:00Z
fees:
  - {{type: flat, key: platform, amount: 200}}
meters:
  - {{key: calls, event_type: llm.call, aggregation: count}}
cost_guard:
  margin_floor: {{percent: 50, on_breach: {{policy: downgrade, model: {CHEAP}}}}}
  cost_cap: {{amount: 60, on_breach: {{policy: deny}}}}
"""

COST_CAP = 25  # the race plan's provider-cost cap
COST_RACE_PLAN = f"""
plan: cost-capped
name: Provider cost capped at {COST_CAP}
effective_from: 2026-01-01T00:00:00Z
meters:
  - {{key: requests, event_type: request, aggregation: count}}
charges:
  - {{key: requests, meter: requests, price: {{model: per_unit, unit_price: 0.01}}}}
cost_guard:
  cost_cap: {{amount: {COST_CAP}, on_breach: {{policy: deny}}}}
"""


def guarded_catalog() -> Catalog:
    return Catalog([parse_plan_text(WHALE_PLAN, "flat-guarded.yaml"),
                    parse_plan_text(COST_RACE_PLAN, "cost-capped.yaml")])
