"""A plan and helpers for the budget tests: metered requests at $0.01 with 100 included,
events carrying team / user / tags properties."""

from __future__ import annotations

from billing.catalog import Catalog, parse_plan_text

BUDGET_PLAN = """
plan: budgeted
name: Requests with budgets
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: requests, event_type: request, aggregation: count}
  - {key: tokens, event_type: request, aggregation: sum, property: output_tokens}
charges:
  - {key: requests, meter: requests, included: {pooled: 100}, price: {model: per_unit, unit_price: 0.01}}
"""


def budget_catalog() -> Catalog:
    return Catalog([parse_plan_text(BUDGET_PLAN, "budgeted.yaml")])
