"""``billing.client.litellm_events``: the mapping of one LiteLLM success callback's arguments
to our event (pure; LiteLLM's own objects drive it in ``test_litellm_callback``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from billing.client.litellm_events import customer_of, litellm_event, utc

RESPONSE = {"id": "chatcmpl-1", "model": "gpt-4o", "usage": {"prompt_tokens": 10, "completion_tokens": 4}}
END = datetime(2026, 10, 10, 12, 0, tzinfo=UTC)


def test_the_customer_comes_from_the_metadata_else_the_user():
    assert customer_of({"litellm_params": {"metadata": {"customer": "acme"}}, "user": "u1"}) == "acme"
    assert customer_of({"litellm_params": {"metadata": {"tenant": "globex"}}}, "tenant") == "globex"
    assert customer_of({"litellm_params": {"metadata": None}, "user": "u1"}) == "u1"
    assert customer_of({"optional_params": {"user": "u2"}}) == "u2"
    assert customer_of({}) is None


def test_nothing_to_record_without_a_customer_an_id_or_an_end():
    assert litellm_event({}, RESPONSE, END) is None
    assert litellm_event({"user": "u1"}, {**RESPONSE, "id": None}, END) is None
    assert litellm_event({"user": "u1", "litellm_call_id": "call-9"}, {**RESPONSE, "id": None}, END)["id"] == "call-9"
    assert litellm_event({"user": "u1"}, RESPONSE, None) is None


def test_times_are_kept_in_utc():
    assert utc(datetime(2026, 10, 10, 14, 0, tzinfo=timezone(timedelta(hours=2)))) == END
    naive = datetime(2026, 10, 10, 12, 0)
    assert utc(naive) == naive.astimezone(UTC)  # LiteLLM's naive times are local
    event = litellm_event({"user": "u1", "litellm_params": {"metadata": {"feature": "chat", "task": "t1"}}},
                          RESPONSE, END)
    assert event == {"id": "chatcmpl-1", "customer": "u1", "type": "llm.call", "timestamp": "2026-10-10T12:00:00Z",
                     "properties": {"input_tokens": 10, "output_tokens": 4, "model": "gpt-4o", "feature": "chat",
                                    "task": "t1"}}
