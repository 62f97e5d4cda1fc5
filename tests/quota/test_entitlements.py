"""Entitlements (pure): a plan's boolean, static and metered features, looked up with
per-customer overrides layered on top."""

from __future__ import annotations

import pytest

from billing.catalog import PlanInvalid, parse_plan_text
from billing.catalog.features import MeteredFeature
from billing.quota.entitlements import Entitlement, answer_metered, features_in_force, lookup

PLAN = """\
plan: featured
name: Featured
effective_from: 2026-01-01T00:00:00Z
meters: [{key: calls, event_type: llm.call}]
charges:
  - {key: extra_calls, meter: calls, included: {pooled: 10}, on_exhaustion: {policy: block}}
features:
  sso: true
  audit_log: false
  max_projects: 10
  max_exports: 0
  support: priority
  calls: {metered: extra_calls}
"""
FEATURES = parse_plan_text(PLAN, "featured.yaml").features


@pytest.mark.parametrize("feature, expected", [
    ("sso", Entitlement("sso", "boolean", True, True)),
    ("audit_log", Entitlement("audit_log", "boolean", False, False)),
    ("max_projects", Entitlement("max_projects", "static", True, 10)),
    ("max_exports", Entitlement("max_exports", "static", False, 0)),
    ("support", Entitlement("support", "static", True, "priority")),
    ("calls", Entitlement("calls", "metered", False, None, "extra_calls")),
    ("gpu", Entitlement("gpu", "absent", False, None)),
])
def test_lookup_answers_each_kind(feature, expected):
    assert lookup(FEATURES, feature) == expected


def test_a_metered_feature_is_answered_by_its_quota_decision():
    pending = lookup(FEATURES, "calls")
    assert answer_metered(pending, True) == Entitlement("calls", "metered", True, None, "extra_calls")
    assert answer_metered(pending, False).has is False


def test_overrides_layer_on_the_plans_features():
    overrides = {"audit_log": True, "max_projects": 50, "sso": None, "gpu": MeteredFeature(metered="extra_calls")}
    merged = features_in_force(FEATURES, overrides)
    assert "sso" not in merged and merged["audit_log"] is True and merged["max_projects"] == 50
    assert lookup(FEATURES, "audit_log", overrides) == Entitlement("audit_log", "boolean", True, True)
    assert lookup(FEATURES, "sso", overrides).kind == "absent"
    assert lookup(FEATURES, "gpu", overrides).metered == "extra_calls"
    assert lookup(FEATURES, "support", overrides).value == "priority"  # not overridden: the plan's
    assert dict(FEATURES)["sso"] is True  # the plan's features are left as they are


@pytest.mark.parametrize("value, path, words", [
    ("1.5", "features.bad", "got 1.5"),
    ("-3", "features.bad", "got -3"),
    ("[1, 2]", "features.bad", "got [1, 2]"),
    ("null", "features.bad", "got None"),
    ('""', "features.bad", "got ''"),
    ("{metered: nope}", "features.bad.metered", "unknown meter or charge 'nope'"),
    ("{meter: calls}", "features.bad.meter", "unknown key"),
])
def test_an_entitlement_of_a_wrong_type_is_a_named_problem(value, path, words):
    with pytest.raises(PlanInvalid) as info:
        parse_plan_text(PLAN + f"  bad: {value}\n", "bad.yaml")
    problems = info.value.problems
    assert problems[0].path == path and problems[0].line == 14
    assert words in problems[0].message
