"""The client's pre-check of a call (``billing.client.calls``) reads filter operators by the
ledger's rule: a property not known yet counts as a value the filter allows."""

from __future__ import annotations

from billing.catalog.schema import Meter
from billing.client.calls import _filter_text, could_match


def test_could_match_with_filter_operators():
    meter = Meter(key="m", event_type="llm.call", filter={
        "region": {"in": ["eu", "us"]}, "tier": {"not": ["free", "trial"]}, "tag": {"exists": True},
        "draft": {"exists": False}, "feature": "chat"})
    assert could_match(meter, "llm.call", {})  # nothing known yet: every rule can hold
    assert could_match(meter, "llm.call", {"region": "us", "tier": "pro", "tag": 1, "feature": "chat"})
    assert not could_match(meter, "llm.call", {"region": "apac"})
    assert not could_match(meter, "llm.call", {"tier": "free"})
    assert not could_match(meter, "llm.call", {"draft": True})
    assert not could_match(meter, "request", {})
    assert _filter_text(meter.filter) == ("region in ['eu', 'us'], tier not ['free', 'trial'], tag exists, "
                                          "draft absent, feature=chat")


def test_an_exists_and_not_rule_on_one_property_gets_a_value_no_list_names():
    meter = Meter(key="m", event_type="e", filter={"plan": {"exists": True, "not": "free"}})
    present, value = meter.allowed_example("plan")
    assert present and meter.matches("e", {"plan": value})
    assert meter.allowed_example("other") == (False, None)  # no rule on it: leave it absent


def test_a_metering_is_parsed_once_and_each_metering_object_on_its_own():
    from billing.client.calls import parse_meters

    first = {"meters": [{"key": "m", "event_type": "llm.call", "filter": {"feature": "chat"}, "ignored": 1}]}
    second = {"meters": [{"key": "m", "event_type": "llm.call", "filter": {"feature": "search"}}, {"bad": 1}]}
    meters = parse_meters(first)
    assert parse_meters(first) is meters  # the same objects (their compiled filters) every call
    assert [(m.key, m.filter) for m in meters] == [("m", {"feature": "chat"})]
    assert [(m.key, m.filter) for m in parse_meters(second)] == [("m", {"feature": "search"})]
    assert parse_meters(dict(first)) is not meters and parse_meters(None) == parse_meters({}) == ()
