"""The event format as a JSON Schema file (`billing/schemas/usage_event.schema.json`,
documented in the README): a valid schema, never stricter than the ledger (every event the
ledger accepts validates, a property over generated events), and the malformed events it
can describe are refused by both."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from billing.costs import CostBook
from billing.events import BUILTIN_TYPES
from billing.instants import to_us
from billing.ledger.prepare import Pricer, Rejection, prepare
from tests.support.event_strategies import event_lists

SCHEMA = json.loads(resources.files("billing.schemas").joinpath("usage_event.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
PRICER = Pricer(CostBook.load_default())
NOW = to_us(datetime(2026, 12, 7, tzinfo=UTC))


def _ledger_accepts(raw) -> bool:
    return type(prepare(raw, now_us=NOW, tolerance_us=300_000_000, known_types=BUILTIN_TYPES,
                        pricer=PRICER)) is not Rejection


def test_the_schema_is_a_valid_json_schema_and_its_examples_are_events():
    Draft202012Validator.check_schema(SCHEMA)
    for example in SCHEMA["examples"]:
        assert VALIDATOR.is_valid(example) and _ledger_accepts(example)


def _wire(event) -> dict:
    """An event as an app sends it (JSON; the generated events name no customer)."""
    raw = json.loads(json.dumps(event.model_dump(mode="json") if hasattr(event, "model_dump") else event,
                                default=str))
    return {"customer": "acme", **raw}


@settings(max_examples=60, deadline=None)
@given(events=event_lists(), noise=st.dictionaries(st.sampled_from(["input_tokens", "quantity", "cost", "task",
                                                                   "model", "feature", "steps"]),
                                                   st.one_of(st.integers(-5, 10**13), st.text(max_size=8),
                                                             st.floats(allow_nan=False), st.none()), max_size=3))
def test_every_event_the_ledger_accepts_validates(events, noise):
    accepted = 0
    for event in events:
        raw = _wire(event)
        for candidate in (raw, {**raw, "properties": {**(raw.get("properties") or {}), **noise}}):
            if _ledger_accepts(candidate):
                accepted += 1
                assert VALIDATOR.is_valid(candidate), sorted(e.message for e in VALIDATOR.iter_errors(candidate))
    assert accepted >= len(events) or not events  # the generated events themselves are all good ones


GOOD = {"id": "e1", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-15T12:00:00Z",
        "properties": {"model": "claude-sonnet-4-5", "input_tokens": 10, "output_tokens": 2}}


@pytest.mark.parametrize("bad", [
    {k: v for k, v in GOOD.items() if k != "id"},
    {**GOOD, "id": ""},
    {**GOOD, "id": "x" * 201},
    {**GOOD, "customer": 7},
    {**GOOD, "type": "t" * 101},
    {**GOOD, "timestamp": "2026-10-15T12:00:00"},  # no timezone
    {k: v for k, v in GOOD.items() if k != "timestamp"},
    {**GOOD, "extra": 1},
    {**GOOD, "properties": [1, 2]},
    {**GOOD, "properties": {"input_tokens": -1}},
    {**GOOD, "properties": {"output_tokens": "many"}},
    {**GOOD, "properties": {"steps": 10**13}},
], ids=["no-id", "empty-id", "long-id", "customer-not-text", "long-type", "naive-time", "no-time", "unknown-field",
        "properties-not-object", "negative-tokens", "tokens-not-a-number", "too-many-steps"])
def test_a_malformed_event_is_refused_by_the_schema_and_the_ledger(bad):
    assert _ledger_accepts(GOOD) and VALIDATOR.is_valid(GOOD)
    assert not VALIDATOR.is_valid(bad)
    assert not _ledger_accepts(bad)
