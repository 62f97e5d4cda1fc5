"""Plan catalog: shipped plans validate, every problem is reported with path and line,
versions resolve by effective date, YAML numbers become exact Decimals."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from billing.catalog import Catalog, PlanInvalid, PlanNotFound, load_plan_file, parse_plan_text, validate_paths
from billing.errors import ErrorCode

D = Decimal
PLANS = Path(__file__).resolve().parents[2] / "plans"
SHIPPED = {"agent-platform", "api-threshold", "copilot-premium", "cursor-pro", "support-chatbot",
           "support-resolutions", "team", "team-advance", "token-api", "vector-store", "model-gateway"}

BROKEN = """\
plan: broken
name: Broken on purpose
effective_from: 2026-01-01T00:00:00Z
feez: []
fees:
  - type: flat
    key: base
    name: amount
meters:
  - key: requests
    event_type: request
charges:
  - key: tiered
    meter: requests
    price:
      model: graduated
      tiers:
        - {up_to: 10, unit_price: "1.00"}
        - {up_to: 5, unit_price: "0.50"}
        - {up_to: 20, unit_price: "0.25"}
  - key: ghost
    meter: nosuchmeter
    price: {model: per_unit, unit_price: "-1"}
  - key: noprice
    meter: requests
    on_exhaustion: {policy: overage}
  - key: slow
    meter: requests
    on_exhaustion: {policy: downgrade, modle: small}
"""

# (path, line, a word of the message) for every problem planted above
EXPECTED = [
    ("feez", 4, "unknown key"),
    ("fees[0].amount", 6, "required"),  # a fee named "amount" still reports the missing amount
    ("charges[0].price.tiers[1].up_to", 19, "greater than 10"),
    ("charges[0].price.tiers[2].up_to", 20, "last tier must be unbounded"),
    ("charges[1].meter", 22, "unknown meter 'nosuchmeter'"),
    ("charges[1].price.unit_price", 23, "greater than or equal to 0"),
    ("charges[2].price", 24, "price is required"),  # missing: the line of its charge
    ("charges[3].on_exhaustion.modle", 29, "unknown key"),
]


def test_shipped_plans_validate():
    plans, problems = validate_paths([PLANS])
    assert problems == []
    assert {p.plan for p in plans} == SHIPPED


def test_every_problem_is_reported_with_path_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    plans, problems = validate_paths([path])
    assert plans == []
    found = [(p.path, p.line) for p in problems]
    assert found == [(path_, line) for path_, line, _ in EXPECTED]
    for problem, (_, _, words) in zip(problems, EXPECTED):
        assert words in problem.message
        assert problem.file == str(path)
        assert str(problem).startswith(f"{path}:{problem.line}: {problem.path}: ")


def test_load_raises_plan_invalid_listing_all_problems(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    with pytest.raises(PlanInvalid) as info:
        load_plan_file(path)
    assert info.value.code == ErrorCode.PLAN_INVALID
    assert len(info.value.problems) == len(EXPECTED)
    for path_, _, _ in EXPECTED:
        assert f": {path_}: " in str(info.value)


def test_union_tags_and_validator_names_never_leak_into_paths():
    text = """\
plan: p
name: P
effective_from: 2026-01-01T00:00:00Z
meters: [{key: m, event_type: request}]
charges:
  - key: c
    meter: m
    price: {model: package, package_size: 0, package_price: 1}
    on_exhaustion: {policy: rate_limit, rate_limit: {limit: 0, window_seconds: 60}}
  - key: d
    meter: m
    price: {model: volume}
  - {key: e, meter: f}
"""
    text = text.replace("[{key: m, event_type: request}]",
                        "[{key: m, event_type: request}, {key: f, event_type: x, filter: {model: {a: 1}}}]")
    with pytest.raises(PlanInvalid) as info:
        parse_plan_text(text, "p.yaml")
    paths = [(p.path, p.line) for p in info.value.problems]
    # a filter mapping is one of operators: ONE problem naming the unknown one and the options
    assert paths[0] == ("meters[1].filter.model", 4)
    assert info.value.problems[0].message == "unknown filter operator 'a' (use in, not or exists)"
    assert paths[1:] == [
        ("charges[0].price.package_size", 8),
        ("charges[0].on_exhaustion.rate_limit.limit", 9),
        ("charges[1].price.tiers", 12),
        ("charges[2].price", 13),  # overage (the default policy) needs a price
    ]


def test_other_semantic_problems(tmp_path):
    text = """\
plan: p
name: P
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: m, event_type: request}
  - {key: m, event_type: llm.call, aggregation: sum}
charges:
  - {key: c, meter: m, price: {model: per_unit, unit_price: 1}}
credits:
  - {key: k, amount: 5, applies_to: [c, nope]}
"""
    with pytest.raises(PlanInvalid) as info:
        parse_plan_text(text, "p.yaml")
    assert [(p.path, p.line) for p in info.value.problems] == [
        ("meters[1].aggregation", 6), ("meters[1].key", 6), ("credits[0].applies_to[1]", 10)]


def test_fields_that_would_be_silently_ignored_are_problems():
    text = """\
plan: p
name: P
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: n, event_type: llm.call, property: input_tokens}
  - {key: u, event_type: llm.call, aggregation: unique_count, property: user, multipliers: {values: {a: 2}}}
  - {key: amount, event_type: payment, aggregation: sum, property: amount}
charges:
  - {key: slow, meter: n, price: {model: per_unit, unit_price: 1}, on_exhaustion: {policy: downgrade, model: small}}
  - {key: share, meter: n, price: {model: percentage, rate: "0.03"}}
  - {key: fine, meter: amount, price: {model: percentage, rate: "0.03"}}
agent_limits: {task_property: task}
"""
    with pytest.raises(PlanInvalid) as info:
        parse_plan_text(text, "p.yaml")
    found = [(p.path, p.line, p.message) for p in info.value.problems]
    assert [(path, line) for path, line, _ in found] == [
        ("meters[0].property", 5),           # count ignores property: meant sum?
        ("meters[1].multipliers", 6),        # unique_count ignores multipliers
        ("charges[0].price", 9),             # downgrade bills at unit_price, never at price
        ("charges[1].price.model", 10),      # a percentage of a count
        ("agent_limits", 12),                # guardrails that limit nothing
    ]
    assert "aggregation: sum" in found[3][2] and "'n'" in found[3][2]


def test_a_missing_or_unknown_kind_points_at_its_tag_and_lists_the_choices():
    text = """\
plan: p
name: P
effective_from: 2026-01-01T00:00:00Z
fees:
  - {key: x, amount: 1}
  - {type: flatt, key: y, amount: 1}
meters: [{key: m, event_type: r}]
charges:
  - {key: c, meter: m, price: {unit_price: 1}}
  - {key: d, meter: m, price: {model: per_unit, unit_price: 1}, on_exhaustion: {policy: throttle}}
"""
    with pytest.raises(PlanInvalid) as info:
        parse_plan_text(text, "p.yaml")
    assert [(p.path, p.line, p.message) for p in info.value.problems] == [
        ("fees[0].type", 5, "required: one of flat, per_seat"),
        ("fees[1].type", 6, "'flatt' is not one of flat, per_seat"),
        ("charges[0].price.model", 9,
         "required: one of per_unit, graduated, volume, package, percentage, cost_plus, capacity, dimension"),
        ("charges[1].on_exhaustion.policy", 10, "'throttle' is not one of block, downgrade, rate_limit, overage"),
    ]


def test_a_key_written_twice_is_a_problem_not_a_silent_override():
    text = """\
plan: p
name: First
name: Second
effective_from: 2026-01-01T00:00:00Z
meters: [{key: m, event_type: request}]
charges:
  - key: c
    meter: m
    price: {model: per_unit, unit_price: "1"}
    price: {model: per_unit, unit_price: "2"}
"""
    with pytest.raises(PlanInvalid) as info:
        parse_plan_text(text, "p.yaml")
    assert [(p.path, p.line) for p in info.value.problems] == [("name", 3), ("charges[0].price", 10)]
    assert "first on line 2" in info.value.problems[0].message
    assert "first on line 9" in info.value.problems[1].message


@pytest.mark.parametrize("text, line", [
    ("plan: x\nname: [unclosed\nfoo: 1\n", 3),
    ("plan: x\n  name: bad indent\n", 2),
    ("plan: x\nname: y\neffective_from: 2026-01-01T00:00:00Z\nspend_cap: 1:30.5\n", 4),
])
def test_invalid_yaml_reports_a_line(text, line):
    with pytest.raises(PlanInvalid) as info:
        parse_plan_text(text, "bad.yaml")
    [problem] = info.value.problems
    assert problem.line == line
    assert "not valid YAML" in problem.message
    assert str(problem).startswith(f"bad.yaml:{line}: ")


def test_non_finite_yaml_numbers_are_problems_not_crashes():
    text = "plan: x\nname: y\neffective_from: 2026-01-01T00:00:00Z\nspend_cap: .inf\n"
    with pytest.raises(PlanInvalid) as info:
        parse_plan_text(text, "inf.yaml")
    assert [(p.path, p.line) for p in info.value.problems] == [("spend_cap", 4)]


def test_yaml_floats_become_exact_decimals():
    plan = parse_plan_text("""
plan: exact
name: Exact
effective_from: 2026-01-01T00:00:00Z
spend_cap: 0.1
meters: [{key: m, event_type: request}]
charges:
  - key: c
    meter: m
    price: {model: graduated, tiers: [{up_to: 1_000.5, unit_price: 0.000003}, {unit_price: 0.30}]}
""")
    assert plan.spend_cap == D("0.1") and type(plan.spend_cap) is Decimal
    tiers = plan.charges[0].price.tiers
    assert tiers[0].up_to == D("1000.5")
    assert tiers[0].unit_price == D("0.000003")  # a float would give 3.0000000000000001E-6
    assert tiers[1].unit_price == D("0.30") and str(tiers[1].unit_price) == "0.30"


def test_no_plan_files_is_a_problem(tmp_path):
    plans, problems = validate_paths([tmp_path])
    assert plans == [] and len(problems) == 1 and "no plan files" in problems[0].message


# -------------------------------------------------------------------------- versions

def version_text(version: int, effective_from: str, price: str) -> str:
    return f"""\
plan: api
version: {version}
name: API v{version}
effective_from: {effective_from}
meters: [{{key: calls, event_type: request}}]
charges: [{{key: calls, meter: calls, price: {{model: per_unit, unit_price: "{price}"}}}}]
"""


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    (tmp_path / "api-v1.yaml").write_text(version_text(1, "2026-01-01T00:00:00Z", "0.10"))
    (tmp_path / "api-v2.yaml").write_text(version_text(2, "2026-07-01T00:00:00+02:00", "0.08"))
    return Catalog.from_paths(tmp_path)


def test_resolve_picks_the_version_in_force(catalog):
    assert catalog.resolve("api", datetime(2026, 3, 1, tzinfo=UTC)).version == 1
    # v2 starts at 2026-06-30T22:00Z
    assert catalog.resolve("api", datetime(2026, 6, 30, 21, 59, 59, tzinfo=UTC)).version == 1
    assert catalog.resolve("api", datetime(2026, 6, 30, 22, 0, tzinfo=UTC)).version == 2
    assert catalog.resolve("api", datetime(2027, 1, 1, tzinfo=UTC)).charges[0].price.unit_price == D("0.08")
    assert catalog.get("api", 1).version == 1
    assert [p.version for p in catalog.versions("api")] == [1, 2]


def test_unknown_plan_or_version_or_instant(catalog):
    with pytest.raises(PlanNotFound) as info:
        catalog.resolve("nope", datetime(2026, 3, 1, tzinfo=UTC))
    assert info.value.code == ErrorCode.PLAN_NOT_FOUND
    with pytest.raises(PlanNotFound):
        catalog.resolve("api", datetime(2025, 12, 31, 23, 59, tzinfo=UTC))  # before v1
    with pytest.raises(PlanNotFound):
        catalog.get("api", 3)


def test_duplicate_version_is_a_problem(tmp_path):
    (tmp_path / "a.yaml").write_text(version_text(1, "2026-01-01T00:00:00Z", "0.10"))
    (tmp_path / "b.yaml").write_text(version_text(1, "2026-02-01T00:00:00Z", "0.20"))
    with pytest.raises(PlanInvalid) as info:
        Catalog.from_paths(tmp_path)
    [problem] = info.value.problems
    assert problem.path == "version" and problem.file.endswith("b.yaml")


def test_versions_must_take_effect_in_version_order(tmp_path):
    (tmp_path / "a.yaml").write_text(version_text(1, "2026-01-01T00:00:00Z", "0.10"))
    (tmp_path / "b.yaml").write_text(version_text(2, "2026-01-01T00:00:00Z", "0.20"))  # same instant as v1
    (tmp_path / "c.yaml").write_text(version_text(3, "2025-06-01T00:00:00Z", "0.30"))  # before v2
    (tmp_path / "d.yaml").write_text(version_text(3, "2027-01-01T00:00:00Z", "0.40"))  # v3 again
    plans, problems = validate_paths([tmp_path])
    assert [p.version for p in plans] == [1]
    assert [(Path(p.file).name, p.path, p.line) for p in problems] == [
        ("d.yaml", "version", 2), ("b.yaml", "effective_from", 4), ("c.yaml", "effective_from", 4)]
    assert "same instant as version 1" in problems[1].message
    assert "before version 2" in problems[2].message
    with pytest.raises(PlanInvalid):
        Catalog.from_paths(tmp_path)


def test_shipped_catalog_resolves_every_plan():
    catalog = Catalog.from_paths(PLANS)
    assert set(catalog.plan_ids()) == SHIPPED
    for plan_id in SHIPPED:
        assert catalog.resolve(plan_id, datetime(2026, 10, 1, tzinfo=UTC)).plan == plan_id


# ------------------------------------------------------------------------ the compiled plan

def test_each_version_is_compiled_once_into_its_lookups():
    catalog = Catalog.from_paths(PLANS)
    plan = catalog.get("cursor-pro", 1)
    compiled = plan.compiled
    assert catalog.get("cursor-pro", 1).compiled is compiled  # compiled by the catalog, kept on the plan
    assert compiled.meter_by_key["requests"] is plan.meters[0] and plan.meter("requests") is plan.meters[0]
    assert [c.key for c in compiled.charges_by_meter["requests"]] == ["fast_requests"]
    assert compiled.requests["requests"][0] == "requests" and compiled.requests["fast_requests"][1][0].key == \
        "fast_requests"
    assert [m.key for m in compiled.meters_by_event_type["request"]] == ["requests"]
    assert compiled.has_rate_limits and compiled.charges[0].slow_price == compiled.charges[0].linear_price
    resolutions = catalog.get("support-resolutions", 1)
    assert resolutions.event_types == {"outcome", "outcome.disputed", "outcome.reopened"}
    assert [m.key for m in resolutions.compiled.event_read_meters] == ["resolutions"]  # disputes: from the events
    with pytest.raises(TypeError):
        compiled.requests["x"] = ("x", ())  # read-only


def test_a_changed_copy_compiles_itself_and_copies_pickle():
    import copy
    import pickle

    plan = Catalog.from_paths(PLANS).get("support-chatbot", 1)
    capped = plan.model_copy(update={"spend_cap": Decimal(5)})
    assert plan.compiled.spend_cap_line is None and capped.compiled.spend_cap_line == Decimal("5.00")
    for other in (copy.deepcopy(plan), pickle.loads(pickle.dumps(plan))):
        assert other == plan and other.compiled.charge_by_key.keys() == {"messages"}
