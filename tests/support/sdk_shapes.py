"""Objects shaped like the official SDKs' responses and stream events (openai 3.63.0,
anthropic 2.17.0: the field names of their ``types/`` modules), as attribute objects (what
the SDKs return) or plain dicts (their ``model_dump()``). Holds no tests itself."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any


def obj(value: Any) -> Any:
    """A dict tree as attribute objects, like the SDKs' pydantic models."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: obj(v) for k, v in value.items()})
    if isinstance(value, list):
        return [obj(v) for v in value]
    return value


def openai_chat(prompt=1200, completion=300, cached=1000, reasoning=None, cache_write=None, tier=None,
                model="gpt-4o") -> dict:
    """``ChatCompletion`` (types/chat/chat_completion.py, completion_usage.py)."""
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0, "cache_write_tokens": cache_write},
             "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                           "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model, "service_tier": tier,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
            "usage": usage}


def openai_chat_chunks(prompt=900, completion=120, cached=600, model="gpt-4o-2024-08-06", with_usage=True) -> list:
    """A ``stream=True, stream_options={"include_usage": True}`` stream of
    ``ChatCompletionChunk``s: ``usage`` is None on every chunk but the last, which has no choices."""
    chunks = [{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model, "service_tier": "default",
               "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}], "usage": None}
              for word in ("Hel", "lo")]
    if with_usage:
        chunks.append({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                       "service_tier": "default", "choices": [],
                       "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                 "total_tokens": prompt + completion,
                                 "prompt_tokens_details": {"cached_tokens": cached}}})
    return chunks


def openai_response(inp=5000, out=800, cached=4000, written=500, ttl_30m=300, ttl_12h=200, reasoning=600,
                    searches=2, tier="priority", model="gpt-5") -> dict:
    """``Response`` of the Responses API (types/responses/response.py, response_usage.py)."""
    return {"id": "resp_1", "object": "response", "created_at": 1.0, "model": model, "status": "completed",
            "service_tier": tier, "output": [],
            "tool_usage": {"web_search": {"num_requests": searches},
                           "image_gen": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                                         "input_tokens_details": {"image_tokens": 0, "text_tokens": 0}}},
            "usage": {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out,
                      "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written,
                                               "cache_write_tokens_details": {"ttl_30m_tokens": ttl_30m,
                                                                              "ttl_12h_tokens": ttl_12h}},
                      "output_tokens_details": {"reasoning_tokens": reasoning}}}


def openai_response_events(**kw) -> list:
    """A Responses stream: ``response.created`` (usage None), deltas, ``response.completed``."""
    final = openai_response(**kw)
    created = {**final, "status": "in_progress", "usage": None}
    return [{"type": "response.created", "sequence_number": 0, "response": created},
            {"type": "response.output_text.delta", "sequence_number": 1, "delta": "Hel", "item_id": "m",
             "output_index": 0, "content_index": 0},
            {"type": "response.completed", "sequence_number": 2, "response": final}]


def anthropic_message(inp=50, out=400, read=2000, written=100, short=40, long=60, thinking=150, searches=3,
                      fetches=1, tier="standard", model="claude-sonnet-4-5-20250929") -> dict:
    """Anthropic ``Message`` (types/usage.py, cache_creation.py, server_tool_usage.py,
    output_tokens_details.py)."""
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": read,
                      "cache_creation_input_tokens": written,
                      "cache_creation": {"ephemeral_5m_input_tokens": short, "ephemeral_1h_input_tokens": long},
                      "server_tool_use": {"web_search_requests": searches, "web_fetch_requests": fetches},
                      "output_tokens_details": {"thinking_tokens": thinking}, "service_tier": tier,
                      "inference_geo": "us", "speed": "standard"}}


def anthropic_events(inp=50, out=400, read=2000, written=100, searches=3, model="claude-sonnet-4-5-20250929") -> list:
    """A ``stream=True`` stream of raw message events: ``message_start`` (usage with the input
    and cache counts, output 1), content events, ``message_delta`` (cumulative usage),
    ``message_stop`` (raw_message_start_event.py, raw_message_delta_event.py,
    message_delta_usage.py)."""
    start = anthropic_message(inp=inp, out=1, read=read, written=written, short=written, long=0, thinking=0,
                              searches=0, fetches=0, model=model)
    start["usage"]["server_tool_use"] = None
    start["usage"]["output_tokens_details"] = None
    return [{"type": "message_start", "message": start},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
             "usage": {"output_tokens": out, "input_tokens": None, "cache_read_input_tokens": None,
                       "cache_creation_input_tokens": None,
                       "server_tool_use": {"web_search_requests": searches, "web_fetch_requests": 0},
                       "output_tokens_details": None}},
            {"type": "message_stop"}]
