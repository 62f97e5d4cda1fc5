"""OTLP/HTTP JSON traces (an ``ExportTraceServiceRequest``) -> usage events, one per span
that carries OpenTelemetry GenAI attributes.

A span is a model call when it has ``gen_ai.request.model``, ``gen_ai.response.model`` or a
``gen_ai.usage.*`` attribute, and its ``gen_ai.operation.name`` is not one that wraps or
is not a model call (``invoke_agent``, ``create_agent``, ``execute_tool``: their usage, when
reported, is their children's, which are counted themselves). Other spans are skipped.

Its event (type ``llm.call``):

- ``id``: ``"<traceId>-<spanId>"`` in lowercase hex (OTLP JSON sends them hex; protobuf's
  JSON mapping base64: both are read): a span exported again is the same event;
- ``timestamp``: ``endTimeUnixNano`` (to the microsecond);
- ``customer`` / ``feature`` / ``task``: the span's attribute of the configured name, else the
  resource's (``OtlpAttributes``); no customer is the span's rejection;
- ``model``: ``gen_ai.response.model``, else ``gen_ai.request.model``; ``operation``:
  ``gen_ai.operation.name``;
- tokens, disjoint as the cost book prices them (``billing.client.usage.extract_usage``, the
  one reading of an OpenAI-shaped usage): the conventions count cached input inside
  ``gen_ai.usage.input_tokens`` and reasoning inside ``gen_ai.usage.output_tokens``, so
  ``input_tokens`` = input - cache reads - cache writes, ``output_tokens`` = output -
  reasoning; ``cache_read_tokens`` (``gen_ai.usage.cache_read.input_tokens``),
  ``cache_write_tokens`` (``gen_ai.usage.cache_creation.input_tokens``) and
  ``reasoning_tokens`` (``gen_ai.usage.reasoning.output_tokens``). Older names are read too
  (``gen_ai.usage.prompt_tokens`` / ``completion_tokens``, ``*_cache_read_input_tokens``...).
  A count that is not a non-negative integer, or cache / reasoning counts larger than the
  count that must include them, is the span's rejection naming the attribute.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from billing.api.formats import Refused
from billing.client.usage import extract_usage
from billing.errors import ErrorCode

EVENT_TYPE = "llm.call"
NOT_MODEL_CALLS = frozenset({"invoke_agent", "create_agent", "execute_tool"})
INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
CACHE_READ = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
CACHE_WRITE = ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens")
REASONING = ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class OtlpAttributes:
    """Which attribute (span first, then resource) names the customer, feature and task."""

    customer: str = "enduser.id"
    feature: str = "billing.feature"
    task: str = "billing.task"


@dataclass
class Mapped:
    """The payload's spans: ``items`` (an event or a ``Refused`` per GenAI span, in payload
    order; ``spans[i]`` is its ``"<traceId>-<spanId>"`` or None) and ``skipped`` (spans
    without GenAI attributes)."""

    items: list[dict | Refused]
    spans: list[str | None]
    skipped: int = 0


def attribute_map(attributes: Any, where: str) -> dict[str, Any]:
    """OTLP ``[{key, value: {stringValue|intValue|...}}]`` as ``{key: the value object}``."""
    if attributes is None:
        return {}
    if not isinstance(attributes, list):
        raise ValueError(f"{where}.attributes must be a JSON array")
    out: dict[str, Any] = {}
    for kv in attributes:
        if isinstance(kv, dict) and isinstance(kv.get("key"), str):
            out[kv["key"]] = kv.get("value")
    return out


def to_events(body: Any, names: OtlpAttributes = OtlpAttributes()) -> Mapped:
    """The usage events of an ``ExportTraceServiceRequest`` in JSON; a body not shaped like
    one is ``ValueError`` naming the path."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object (an ExportTraceServiceRequest)")
    mapped = Mapped([], [])
    for r, rs in enumerate(_list(body, "resourceSpans", "resourceSpans")):
        where = f"resourceSpans[{r}]"
        if not isinstance(rs, dict):
            raise ValueError(f"{where} must be an object")
        resource = rs.get("resource") or {}
        resource_attrs = attribute_map(resource.get("attributes") if isinstance(resource, dict) else None,
                                       f"{where}.resource")
        for s, ss in enumerate(_list(rs, "scopeSpans", f"{where}.scopeSpans")):
            if not isinstance(ss, dict):
                raise ValueError(f"{where}.scopeSpans[{s}] must be an object")
            for p, span in enumerate(_list(ss, "spans", f"{where}.scopeSpans[{s}].spans")):
                span_where = f"{where}.scopeSpans[{s}].spans[{p}]"
                if not isinstance(span, dict):
                    raise ValueError(f"{span_where} must be an object")
                attrs = attribute_map(span.get("attributes"), span_where)
                if not _is_model_call(attrs):
                    mapped.skipped += 1
                    continue
                key = _span_key(span)
                mapped.spans.append(key if isinstance(key, str) else None)
                mapped.items.append(key if isinstance(key, Refused) else
                                    span_event(key, span, attrs, resource_attrs, names))
    return mapped


def span_event(key: str, span: dict, attrs: dict, resource: dict, names: OtlpAttributes) -> dict | Refused:
    """One GenAI span's event (``key``: its ``"<traceId>-<spanId>"``)."""
    customer = _text(attrs.get(names.customer)) or _text(resource.get(names.customer))

    def refuse(code: ErrorCode, field: str, message: str) -> Refused:
        return Refused(code, field, f"span {key}: {field}: {message}", key, customer)

    if not customer:
        return refuse(ErrorCode.EVENT_INVALID, names.customer,
                      "no span or resource attribute names the customer")
    try:
        end = int(span.get("endTimeUnixNano") or 0)
    except (TypeError, ValueError):
        end = 0
    if not 0 < end < 2**63:  # OTLP's fixed64, within what a datetime can hold
        return refuse(ErrorCode.BAD_TIMESTAMP, "endTimeUnixNano", "must be the span's end, in nanoseconds since 1970")
    counts: dict[tuple[str, ...], int] = {}
    for group in (INPUT, OUTPUT, CACHE_READ, CACHE_WRITE, REASONING):
        for name in group:
            if name in attrs:
                value = _count(attrs[name])
                if value is None:
                    return refuse(ErrorCode.NON_NUMERIC_QUANTITY, name, "must be a non-negative integer")
                counts[group] = value
                break
    cached, written = counts.get(CACHE_READ, 0), counts.get(CACHE_WRITE, 0)
    if cached + written > counts.get(INPUT, 0) and (cached or written):
        return refuse(ErrorCode.EVENT_INVALID, INPUT[0], f"({counts.get(INPUT, 0)}) must include the cached input "
                      f"tokens ({cached} read, {written} written), as the GenAI conventions count them")
    if counts.get(REASONING, 0) > counts.get(OUTPUT, 0):
        return refuse(ErrorCode.EVENT_INVALID, OUTPUT[0], f"({counts.get(OUTPUT, 0)}) must include the reasoning "
                      f"tokens ({counts[REASONING]})")
    usage: dict[str, Any] = {"prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
                             "completion_tokens_details": {"reasoning_tokens": counts.get(REASONING, 0)}}
    usage["prompt_tokens"], usage["completion_tokens"] = counts.get(INPUT, 0), counts.get(OUTPUT, 0)
    props: dict[str, Any] = extract_usage({"usage": usage}) if INPUT in counts or OUTPUT in counts else {}
    model = _text(attrs.get("gen_ai.response.model")) or _text(attrs.get("gen_ai.request.model"))
    for prop, value in (("model", model), ("operation", _text(attrs.get("gen_ai.operation.name"))),
                        ("feature", _text(attrs.get(names.feature)) or _text(resource.get(names.feature))),
                        ("task", _text(attrs.get(names.task)) or _text(resource.get(names.task)))):
        if value:
            props[prop] = value
    stamp = _EPOCH + timedelta(microseconds=end // 1000)
    return {"id": key, "customer": customer, "type": EVENT_TYPE,
            "timestamp": stamp.isoformat().replace("+00:00", "Z"), "properties": props}


def _is_model_call(attrs: dict) -> bool:
    if _text(attrs.get("gen_ai.operation.name")) in NOT_MODEL_CALLS:
        return False
    return ("gen_ai.request.model" in attrs or "gen_ai.response.model" in attrs
            or any(k.startswith("gen_ai.usage.") for k in attrs))


def _span_key(span: dict) -> str | Refused:
    trace, span_id = _hex_id(span.get("traceId"), 16), _hex_id(span.get("spanId"), 8)
    for name, value in (("traceId", trace), ("spanId", span_id)):
        if value is None:
            return Refused(ErrorCode.EVENT_INVALID, name,
                           f"span {name}: must be {'32' if name == 'traceId' else '16'} hex digits (not all zero)")
    return f"{trace}-{span_id}"


def _hex_id(value: Any, size: int) -> str | None:
    """A trace (16 bytes) or span (8 bytes) id sent as hex (OTLP JSON) or base64 (protobuf's
    JSON mapping), as lowercase hex; None when it is neither or all zero."""
    if not isinstance(value, str):
        return None
    raw: bytes | None = None
    if len(value) == 2 * size:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
    if len(raw) != size or not any(raw):
        return None
    return raw.hex()


def _list(obj: dict, key: str, where: str) -> list:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a JSON array")
    return value


def _scalar(value: Any) -> Any:
    if not isinstance(value, dict):
        return None
    for kind in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if kind in value:
            return value[kind]
    return None


def _text(value: Any) -> str | None:
    scalar = _scalar(value)
    if isinstance(scalar, bool) or scalar is None:
        return None
    text = str(scalar)
    return text or None


def _count(value: Any) -> int | None:
    """A token count: ``intValue`` (a string in JSON), an integral ``doubleValue``, or digits."""
    scalar = _scalar(value)
    if isinstance(scalar, bool) or scalar is None:
        return None
    if isinstance(scalar, float):
        return int(scalar) if scalar.is_integer() and scalar >= 0 else None
    if isinstance(scalar, int):
        return scalar if scalar >= 0 else None
    if isinstance(scalar, str) and scalar.isascii() and scalar.isdigit():
        return int(scalar)
    return None
