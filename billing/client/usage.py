"""The usage of one LLM call, read from the official SDKs' responses (objects or their dicts).

Field names are read from the SDKs' source: ``openai`` 3.63.0 (``types/completion_usage.py``,
``types/responses/response_usage.py``, ``types/responses/response.py`` for ``service_tier``
and ``tool_usage``, ``types/chat/chat_completion_chunk.py``,
``types/responses/response_completed_event.py``) and ``anthropic`` 2.17.0
(``types/usage.py``, ``message_delta_usage.py``, ``cache_creation.py``,
``server_tool_usage.py``, ``output_tokens_details.py``, ``raw_message_start_event.py``,
``raw_message_delta_event.py``, and ``lib/streaming/_messages.py`` for how a stream's usage
adds up).

The properties recorded are the cost book's DISJOINT token counts
(``billing.costs.cost_breakdown`` prices each at its own price, so no token may be in two):

- ``input_tokens``: input that was neither read from nor written to a cache. OpenAI counts
  cached tokens (and cache writes) inside ``prompt_tokens`` / ``input_tokens``: they are
  taken out. Anthropic's ``input_tokens`` already excludes them.
- ``cache_read_tokens``: OpenAI ``cached_tokens``; Anthropic ``cache_read_input_tokens``.
- ``cache_write_tokens``: OpenAI ``cache_write_tokens``; Anthropic
  ``cache_creation_input_tokens``. Its parts by lifetime are recorded too, for reports
  (``cache_write_5m_tokens`` / ``cache_write_1h_tokens`` from Anthropic's
  ``cache_creation``, ``cache_write_30m_tokens`` / ``cache_write_12h_tokens`` from
  OpenAI's ``cache_write_tokens_details``). The cost book prices the ``cache_write_1h_tokens``
  part at the model's 1-hour cache-write rate and the rest at the 5-minute one.
- ``output_tokens`` and ``reasoning_tokens``: both providers count reasoning inside the
  output (OpenAI ``reasoning_tokens``, Anthropic ``output_tokens_details.thinking_tokens``);
  it is split out, so output + reasoning is the provider's output count.
- ``web_search_requests`` (Anthropic ``server_tool_use``, OpenAI Responses
  ``tool_usage.web_search.num_requests``), ``web_fetch_requests`` (Anthropic).
- ``service_tier`` as the provider reports it: the cost book prices the event at that
  tier's rates (``billing.costs.event_tier``: ``default``/``auto``/``standard`` are the
  standard tier; a tier the model has no rates for leaves the event unpriced), and
  ``batch: true`` for the tiers billed at about the batch price (Anthropic ``batch``, OpenAI
  ``flex``), for reports that filter on it.
- ``web_search_requests`` is priced per call where the model has a ``per_unit`` price.

Counts that are missing, negative or not integers are ignored; zero counts other than
``input_tokens`` and ``output_tokens`` are left out.
"""

from __future__ import annotations

from typing import Any

BATCH_TIERS = frozenset({"batch", "flex"})
_ANTHROPIC_DELTA_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                           "cache_read_input_tokens", "server_tool_use", "output_tokens_details")
_ANTHROPIC_FIELDS = (*_ANTHROPIC_DELTA_FIELDS, "cache_creation", "service_tier")


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _count(value: Any) -> int | None:
    """A token count: a non-negative integer (an integral float or digit string too)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number >= 0 else None


def _usage_block(response: Any) -> tuple[Any, Any]:
    """(the usage block, the object around it) of a response, a stream's final chunk or
    event, or a usage block given directly."""
    usage = _get(response, "usage")
    if usage is not None:
        return usage, response
    for inner in (_get(response, "response"), _get(response, "message")):  # Responses / Anthropic events
        if inner is not None and _get(inner, "usage") is not None:
            return _get(inner, "usage"), inner
    if any(_count(_get(response, k)) is not None for k in ("prompt_tokens", "input_tokens", "output_tokens")):
        return response, None
    return None, None


def model_of(response: Any) -> str | None:
    """The model a response names (``model`` of an OpenAI or Anthropic response, of a
    chunk, of a Responses event's ``response`` or an Anthropic ``message_start``'s
    ``message``)."""
    for obj in (response, _get(response, "response"), _get(response, "message")):
        model = _get(obj, "model")
        if isinstance(model, str) and model:
            return model
    return None


def extract_usage(response: Any) -> dict[str, Any]:
    """The usage properties of an LLM response (see the module docstring); ``{}`` when it
    carries no usage."""
    usage, outer = _usage_block(response)
    if usage is None:
        return {}
    out: dict[str, Any] = {}
    prompt = _count(_get(usage, "prompt_tokens"))
    details = _get(usage, "prompt_tokens_details") if prompt is not None else _get(usage, "input_tokens_details")
    if prompt is not None or details is not None:  # OpenAI: cached and written tokens inside the input
        total = prompt if prompt is not None else _count(_get(usage, "input_tokens")) or 0
        cached = _count(_get(details, "cached_tokens")) or 0
        written = _count(_get(details, "cache_write_tokens")) or 0
        cached = min(cached, total)
        written = min(written, total - cached)
        out["input_tokens"] = total - cached - written
        _put(out, "cache_read_tokens", cached)
        _put(out, "cache_write_tokens", written)
        ttl = _get(details, "cache_write_tokens_details")
        _put(out, "cache_write_30m_tokens", _count(_get(ttl, "ttl_30m_tokens")))
        _put(out, "cache_write_12h_tokens", _count(_get(ttl, "ttl_12h_tokens")))
        output = _count(_get(usage, "completion_tokens")) if prompt is not None else None
        if output is None:
            output = _count(_get(usage, "output_tokens"))
        reasoning = _get(_get(usage, "completion_tokens_details") or _get(usage, "output_tokens_details"),
                         "reasoning_tokens")
    else:  # Anthropic: cache reads and writes are apart from input_tokens
        inp = _count(_get(usage, "input_tokens"))
        if inp is not None:
            out["input_tokens"] = inp
        creation = _get(usage, "cache_creation")
        short, long = _count(_get(creation, "ephemeral_5m_input_tokens")), _count(_get(creation, "ephemeral_1h_input_tokens"))
        written = _count(_get(usage, "cache_creation_input_tokens"))
        if written is None and (short or long):
            written = (short or 0) + (long or 0)
        _put(out, "cache_read_tokens", _count(_get(usage, "cache_read_input_tokens")))
        _put(out, "cache_write_tokens", written)
        _put(out, "cache_write_5m_tokens", short)
        _put(out, "cache_write_1h_tokens", long)
        output = _count(_get(usage, "output_tokens"))
        thinking = _get(usage, "output_tokens_details")  # Responses-shaped without input details too
        reasoning = _get(thinking, "thinking_tokens") or _get(thinking, "reasoning_tokens")
        tools = _get(usage, "server_tool_use")
        _put(out, "web_search_requests", _count(_get(tools, "web_search_requests")))
        _put(out, "web_fetch_requests", _count(_get(tools, "web_fetch_requests")))
    if output is not None:
        reasoning = min(_count(reasoning) or 0, output)
        out["output_tokens"] = output - reasoning
        _put(out, "reasoning_tokens", reasoning)
    _put(out, "web_search_requests", _count(_get(_get(_get(outer, "tool_usage"), "web_search"), "num_requests")))
    tier = _get(outer, "service_tier") or _get(usage, "service_tier")
    if isinstance(tier, str) and tier:
        out["service_tier"] = tier
        if tier in BATCH_TIERS:
            out["batch"] = True
    return out


def _put(out: dict[str, Any], name: str, value: int | None) -> None:
    if value:
        out[name] = value


class StreamUsage:
    """Reads the usage of a streamed call chunk by chunk (``feed``), as the SDKs add it up:

    - OpenAI Chat Completions: the last chunk carries ``usage`` when the request set
      ``stream_options={"include_usage": True}`` (earlier chunks have ``usage: None``);
    - OpenAI Responses: the ``response.completed`` (or ``.incomplete`` / ``.failed``) event's
      ``response``;
    - Anthropic Messages: ``message_start``'s ``message.usage``, then each ``message_delta``'s
      cumulative ``usage`` fields that are set.

    ``seen``: some usage arrived; ``usage()`` the properties so far; ``model`` the model the
    chunks named."""

    def __init__(self) -> None:
        self.model: str | None = None
        self.seen = False
        self._final: Any = None
        self._anthropic: dict[str, Any] | None = None

    def feed(self, chunk: Any) -> None:
        kind = _get(chunk, "type")
        if kind == "message_start":
            message = _get(chunk, "message")
            self.model = model_of(message) or self.model
            usage = _get(message, "usage")
            if usage is not None:
                self._anthropic = {f: _get(usage, f) for f in _ANTHROPIC_FIELDS}
                self.seen = True
            return
        if kind == "message_delta":
            usage = _get(chunk, "usage")
            if usage is not None:
                merged = self._anthropic if self._anthropic is not None else {}
                for name in _ANTHROPIC_DELTA_FIELDS:
                    value = _get(usage, name)
                    if value is not None:
                        merged[name] = value
                self._anthropic = merged
                self.seen = True
            return
        inner = _get(chunk, "response") if isinstance(kind, str) and kind.startswith("response.") else None
        target = inner if inner is not None else chunk
        self.model = model_of(target) or self.model
        if _get(target, "usage") is not None:
            self._final = target
            self.seen = True

    def usage(self) -> dict[str, Any]:
        if self._anthropic is not None:
            return extract_usage({"usage": self._anthropic})
        return extract_usage(self._final) if self._final is not None else {}
