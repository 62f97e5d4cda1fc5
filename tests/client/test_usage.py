"""Reading the usage of SDK-shaped responses (objects and dicts) and streams, and that the
recorded counts are disjoint as the cost book prices them (no token counted twice)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.client import StreamUsage, extract_usage, model_of
from billing.costs import CostBook, event_cost
from billing.events import UsageEvent
from tests.support.sdk_shapes import (
    anthropic_events, anthropic_message, obj, openai_chat, openai_chat_chunks, openai_response,
    openai_response_events)

SHAPES = [pytest.param(lambda d: d, id="dict"), pytest.param(obj, id="sdk-object")]


@pytest.mark.parametrize("shape", SHAPES)
def test_openai_chat_completions(shape):
    assert extract_usage(shape(openai_chat())) == {"input_tokens": 200, "output_tokens": 300,
                                                   "cache_read_tokens": 1000}
    # prompt_tokens holds the cached and written tokens, completion_tokens the reasoning
    full = openai_chat(prompt=1200, completion=300, cached=1000, reasoning=100, cache_write=50, tier="flex")
    assert extract_usage(shape(full)) == {
        "input_tokens": 150, "cache_read_tokens": 1000, "cache_write_tokens": 50, "output_tokens": 200,
        "reasoning_tokens": 100, "service_tier": "flex", "batch": True}
    assert extract_usage(shape(openai_chat(cached=0, tier="default"))) == {
        "input_tokens": 1200, "output_tokens": 300, "service_tier": "default"}
    assert model_of(shape(full)) == "gpt-4o"


@pytest.mark.parametrize("shape", SHAPES)
def test_openai_responses(shape):
    assert extract_usage(shape(openai_response())) == {
        "input_tokens": 500, "cache_read_tokens": 4000, "cache_write_tokens": 500, "cache_write_30m_tokens": 300,
        "cache_write_12h_tokens": 200, "output_tokens": 200, "reasoning_tokens": 600, "web_search_requests": 2,
        "service_tier": "priority"}
    assert model_of(shape(openai_response())) == "gpt-5"


@pytest.mark.parametrize("shape", SHAPES)
def test_anthropic_messages(shape):
    # input_tokens excludes cache reads and writes; thinking is inside output_tokens
    assert extract_usage(shape(anthropic_message(tier="batch"))) == {
        "input_tokens": 50, "cache_read_tokens": 2000, "cache_write_tokens": 100, "cache_write_5m_tokens": 40,
        "cache_write_1h_tokens": 60, "output_tokens": 250, "reasoning_tokens": 150, "web_search_requests": 3,
        "web_fetch_requests": 1, "service_tier": "batch", "batch": True}
    plain = {"usage": {"input_tokens": 50, "output_tokens": 400, "cache_read_input_tokens": 2000,
                       "cache_creation_input_tokens": 100}}
    assert extract_usage(shape(plain)) == {"input_tokens": 50, "output_tokens": 400, "cache_read_tokens": 2000,
                                           "cache_write_tokens": 100}
    assert model_of(shape(anthropic_message())) == "claude-sonnet-4-5-20250929"


@pytest.mark.parametrize("shape", SHAPES)
def test_streams_add_up_as_the_sdks_do(shape):
    chat = StreamUsage()
    for chunk in openai_chat_chunks():
        chat.feed(shape(chunk))
    assert chat.seen and chat.model == "gpt-4o-2024-08-06"
    assert chat.usage() == {"input_tokens": 300, "cache_read_tokens": 600, "output_tokens": 120,
                            "service_tier": "default"}
    responses = StreamUsage()
    for event in openai_response_events():
        responses.feed(shape(event))
    assert responses.usage() == extract_usage(openai_response()) and responses.model == "gpt-5"
    messages = StreamUsage()
    for event in anthropic_events():
        messages.feed(shape(event))
    # message_start's input and cache counts, message_delta's cumulative output and tools
    assert messages.usage() == {"input_tokens": 50, "cache_read_tokens": 2000, "cache_write_tokens": 100,
                                "cache_write_5m_tokens": 100, "output_tokens": 400, "web_search_requests": 3,
                                "service_tier": "standard"}
    assert messages.model == "claude-sonnet-4-5-20250929"
    started = StreamUsage()
    started.feed(shape(anthropic_events()[0]))  # a stream cut after message_start: the input is known
    assert started.seen and started.usage()["input_tokens"] == 50
    bare = StreamUsage()
    for chunk in openai_chat_chunks(with_usage=False):
        bare.feed(shape(chunk))
    assert not bare.seen and bare.usage() == {} and bare.model == "gpt-4o-2024-08-06"


def test_malformed_usage_is_ignored_not_fatal():
    assert extract_usage(object()) == {}
    assert extract_usage({"usage": None}) == {}
    assert extract_usage(None) == {}
    assert extract_usage({"usage": {"prompt_tokens": -5, "completion_tokens": "x"}}) == {}
    assert extract_usage({"usage": {"input_tokens": True, "output_tokens": 2.5}}) == {}
    assert extract_usage({"usage": {"input_tokens": 7.0, "output_tokens": "3",
                                    "cache_read_input_tokens": [1], "server_tool_use": "?"}}) == {
        "input_tokens": 7, "output_tokens": 3}
    # more cached than prompt (a broken proxy): never a negative count
    assert extract_usage({"usage": {"prompt_tokens": 10, "completion_tokens": 1,
                                    "prompt_tokens_details": {"cached_tokens": 50, "cache_write_tokens": 9}}}) == {
        "input_tokens": 0, "cache_read_tokens": 10, "output_tokens": 1}
    assert model_of({"model": 5}) is None and model_of(None) is None


JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-10**15, 10**15) | st.floats() | st.text(max_size=5),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                           st.sampled_from(["usage", "prompt_tokens", "completion_tokens", "input_tokens",
                                            "output_tokens", "prompt_tokens_details", "cached_tokens",
                                            "cache_write_tokens", "input_tokens_details", "output_tokens_details",
                                            "reasoning_tokens", "thinking_tokens", "cache_creation",
                                            "cache_read_input_tokens", "cache_creation_input_tokens",
                                            "server_tool_use", "web_search_requests", "service_tier",
                                            "tool_usage", "response", "message", "type", "model"]),
                           inner, max_size=6), max_leaves=25)


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(JSONISH)
def test_any_json_gives_non_negative_integer_counts(value):
    out = extract_usage(value)
    for key, count in out.items():
        if key == "service_tier":
            assert isinstance(count, str)
        elif key == "batch":
            assert count is True
        else:
            assert type(count) is int and count >= 0
    stream = StreamUsage()
    stream.feed(value)
    stream.usage()


COUNT = st.integers(0, 10**7)


@settings(max_examples=80, deadline=None)
@given(prompt=COUNT, cached=COUNT, written=COUNT, completion=COUNT, reasoning=COUNT)
def test_openai_counts_are_disjoint_and_add_up(prompt, cached, written, completion, reasoning):
    cached, written, reasoning = min(cached, prompt), min(written, prompt - min(cached, prompt)), min(reasoning, completion)
    for response in (openai_chat(prompt=prompt, completion=completion, cached=cached, reasoning=reasoning,
                                 cache_write=written),
                     openai_response(inp=prompt, out=completion, cached=cached, written=written, reasoning=reasoning)):
        u = extract_usage(response)
        assert u["input_tokens"] + u.get("cache_read_tokens", 0) + u.get("cache_write_tokens", 0) == prompt
        assert u["output_tokens"] + u.get("reasoning_tokens", 0) == completion


@settings(max_examples=80, deadline=None)
@given(inp=COUNT, read=COUNT, written=COUNT, out=COUNT, thinking=COUNT, hour=COUNT, searches=st.integers(0, 50))
def test_anthropic_counts_priced_once(inp, read, written, out, thinking, hour, searches):
    """The recorded properties cost exactly what the provider bills: each token once, at its
    price (claude-sonnet-4-5 per 1M: input 3, cache read 0.30, 5-minute cache write 3.75,
    1-hour cache write 6, output 15; over 200k prompt tokens 6, 0.60, 7.50, 12, 22.50), and
    each web search $0.01."""
    thinking, hour = min(thinking, out), min(hour, written)
    u = extract_usage(anthropic_message(inp=inp, out=out, read=read, written=written, short=written - hour,
                                        long=hour, thinking=thinking, searches=searches, tier="standard"))
    event = UsageEvent(id="e", customer="c", type="llm.call", timestamp=datetime(2026, 10, 1, tzinfo=UTC),
                       properties={**u, "model": "claude-sonnet-4-5"})
    rates = (["6", "0.60", "7.50", "12", "22.50"] if inp + read + written > 200_000
             else ["3", "0.30", "3.75", "6", "15"])
    i, r, w5, w1, o = map(Decimal, rates)
    expected = (inp * i + read * r + (written - hour) * w5 + hour * w1 + out * o) / 1_000_000 + searches * Decimal("0.01")
    assert event_cost(event, CostBook.load_default()) == expected
