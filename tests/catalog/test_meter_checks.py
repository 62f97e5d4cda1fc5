"""The value aggregations and filter operators are validated with the collect-all
``file:line: path: message`` problems: every bad meter in one run, each a named error."""

from __future__ import annotations

import pytest

from billing.catalog import PlanInvalid, parse_plan_text

HEAD = """\
plan: p
name: P
effective_from: 2026-01-01T00:00:00Z
meters:
"""


def problems(meters: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(PlanInvalid) as info:
        parse_plan_text(HEAD + meters, "p.yaml")
    return [(p.path, p.line, p.message) for p in info.value.problems]


def test_every_bad_value_meter_is_named():
    found = problems("""\
  - {key: a, event_type: s, aggregation: time_weighted_sum, property: gb}
  - {key: b, event_type: s, aggregation: latest}
  - {key: c, event_type: s, aggregation: min, property: gb, time_unit: hour}
  - {key: d, event_type: s, aggregation: avg, property: gb, multipliers: {values: {x: 2}}}
  - {key: e, event_type: s, aggregation: time_weighted_sum, property: gb, time_unit: week}
  - {key: f, event_type: s, aggregation: min, property: gb, disputes: {window_days: 3}}
""")
    assert found == [
        ("meters[0].time_unit", 5, "a time_weighted_sum meter needs a time_unit (second, minute, hour or day): "
                                   "level x time held is summed in it"),
        ("meters[1].aggregation", 6, "aggregation 'latest' needs a 'property'"),
        ("meters[2].time_unit", 7, "time_unit applies to time_weighted_sum meters only"),
        ("meters[3].multipliers", 8, "multipliers do not apply to avg meters"),
        ("meters[4].time_unit", 9, "Input should be 'second', 'minute', 'hour' or 'day'"),
        ("meters[5].disputes", 10, "disputes apply to count and unique_count meters only"),
    ]


def test_every_bad_filter_is_named():
    found = problems("""\
  - key: a
    event_type: s
    filter:
      region: {in: []}
      tier: {nope: free}
      tag: {exists: maybe}
      plan: {in: free}
      size: {not: []}
      kind: []
      level: {}
      other: 1.5
""")
    assert found == [
        ("meters[0].filter.region", 8, "in: an empty list matches nothing: list at least one value"),
        ("meters[0].filter.tier", 9, "unknown filter operator 'nope' (use in, not or exists)"),
        ("meters[0].filter.tag", 10, "exists must be true or false, got 'maybe'"),
        ("meters[0].filter.plan", 11, "in takes a list of values, got 'free'"),
        ("meters[0].filter.size", 12, "not: an empty list matches nothing: list at least one value"),
        ("meters[0].filter.kind", 13, "an empty list matches nothing: list at least one value"),
        ("meters[0].filter.level", 14, "an operator mapping needs at least one of in, not, exists"),
        ("meters[0].filter.other", 15, "a filter value is a string, an integer, a boolean, a list of them or a "
                                       "mapping of operators (in, not, exists), got Decimal('1.5')"),
    ]


def test_operators_combine_and_plain_values_keep_working():
    plan = parse_plan_text(HEAD + """\
  - key: a
    event_type: s
    filter: {region: {in: [eu, us]}, tier: {exists: true, not: [free, trial]}, level: 2, model: [x, y]}
""", "p.yaml")
    meter = plan.meters[0]
    assert meter.matches("s", {"region": "eu", "tier": "pro", "level": "2", "model": "x"})
    assert not meter.matches("s", {"region": "eu", "level": 2, "model": "x"})  # tier must exist
    assert not meter.matches("s", {"region": "eu", "tier": "trial", "level": 2, "model": "x"})
    assert not meter.matches("s", {"region": "apac", "tier": "pro", "level": 2, "model": "y"})
    assert not meter.matches("t", {"region": "eu", "tier": "pro", "level": 2, "model": "x"})


def test_every_bad_dimension_price_is_named():
    found = problems("""\
  - {key: tokens, event_type: llm.call, aggregation: sum, property: output_tokens}
  - {key: peak, event_type: llm.call, aggregation: max, property: output_tokens}
charges:
  - key: a
    meter: tokens
    price: {model: dimension, prices: {o3: {model: per_unit, unit_price: 1}}, default: {model: per_unit, unit_price: 1}}
  - key: b
    meter: tokens
    price:
      model: dimension
      property: model
      prices:
        o3: {model: percentage, rate: "0.1"}
        gpt: {model: graduated, tiers: [{up_to: 5, unit_price: 1}, {up_to: 2, unit_price: 1}, {unit_price: 1}]}
      default: {model: dimension}
  - key: c
    meter: peak
    price: {model: dimension, property: region, prices: {}, default: {model: per_unit, unit_price: 1}}
""")
    assert found == [
        ("charges[0].price.property", 10, "Field required"),
        ("charges[1].price.prices.o3.model", 17, "'percentage' is not one of per_unit, graduated, package, cost_plus"),
        ("charges[1].price.prices.gpt.tiers[1].up_to", 18, "up_to must be greater than 5 (the previous tier's)"),
        ("charges[1].price.default.model", 19, "'dimension' is not one of per_unit, graduated, package, cost_plus"),
        ("charges[2].price.model", 22, "a dimension price splits its meter's units by value: meter 'peak' must "
                                       "count or sum (aggregation: count or sum)"),
        ("charges[2].price.prices", 22, "Dictionary should have at least 1 item after validation, not 0"),
    ]


def test_a_meter_is_split_by_one_property():
    found = problems("""  - {key: tokens, event_type: llm.call, aggregation: sum, property: output_tokens}
charges:
  - key: a
    meter: tokens
    price: {model: dimension, property: model, prices: {o3: {model: per_unit, unit_price: 1}},
            default: {model: per_unit, unit_price: 1}}
  - key: b
    meter: tokens
    price: {model: dimension, property: region, prices: {eu: {model: per_unit, unit_price: 1}},
            default: {model: per_unit, unit_price: 1}}
""")
    assert found == [("charges[1].price.property", 13,
                      "charge 0 splits meter 'tokens' by 'model': a meter is split by one property")]
