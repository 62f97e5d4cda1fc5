"""A test plan of the value aggregations, filter operators and dimension prices, on the
properties ``tests/support/event_strategies.py`` draws (part of ``db.catalog_with_extras``)."""

from __future__ import annotations

# The value aggregations (latest, min, avg, time-weighted sums: no counter, read from the
# events), filter operators (in, not, exists) and dimension prices (totals per value of a
# property: 2 and "2" are one level), on the properties ``event_strategies`` draws.
LEVELS_YAML = """
plan: agg-levels
version: 1
name: Value aggregations and filter operators (tests)
effective_from: 2026-01-01T00:00:00Z
currency: USD
meters:
  - key: unit_hours
    event_type: agent.step
    aggregation: time_weighted_sum
    property: units
    time_unit: hour
  - key: gold_step_seconds
    event_type: agent.step
    aggregation: time_weighted_sum
    property: steps
    time_unit: second
    filter: {tier: {in: [gold, silver]}, model: {exists: true}}
  - key: latest_units
    event_type: agent.step
    aggregation: latest
    property: units
  - key: latest_amount
    event_type: payment
    aggregation: latest
    property: amount
  - key: min_units
    event_type: agent.step
    aggregation: min
    property: units
    filter: {tier: {not: bronze}}
  - key: avg_steps
    event_type: agent.step
    aggregation: avg
    property: steps
    filter: {level: {not: [3]}}
  - key: untiered
    event_type: agent.step
    aggregation: count
    filter: {tier: {exists: false}}
  - key: not_gold_units
    event_type: agent.step
    aggregation: sum
    property: units
    filter: {tier: {not: [gold, silver]}, level: {in: [2, 3]}}
  - key: tasked_max
    event_type: agent.step
    aggregation: max
    property: steps
    filter: {task: {exists: true, not: t1}}
charges:
  - key: unit_hours
    meter: unit_hours
    price: {model: per_unit, unit_price: "0.001"}
  - key: latest_units
    meter: latest_units
    included: {pooled: 10}
    price: {model: per_unit, unit_price: "0.5"}
  - key: avg_steps
    meter: avg_steps
    price: {model: graduated, tiers: [{up_to: 5, unit_price: "1"}, {unit_price: "0.25"}]}
  - key: min_units
    meter: min_units
    price: {model: per_unit, unit_price: "0.01"}
  - key: untiered
    meter: untiered
    price: {model: per_unit, unit_price: "0.02"}
  - key: units_by_model
    meter: not_gold_units
    included: {pooled: 100}
    price:
      model: dimension
      property: model
      prices:
        o3: {model: per_unit, unit_price: "0.5"}
        gpt-4o: {model: graduated, tiers: [{up_to: 50, unit_price: "1"}, {unit_price: "0.1"}]}
      default: {model: package, package_size: 10, package_price: "2"}
  - key: untiered_by_level
    meter: untiered
    price:
      model: dimension
      property: level
      prices: {"2": {model: per_unit, unit_price: "0.3"}}
      default: {model: cost_plus, markup: "0.5"}
"""


def levels_plan():
    from billing.catalog import parse_plan_text

    return parse_plan_text(LEVELS_YAML, "agg-levels.yaml")
