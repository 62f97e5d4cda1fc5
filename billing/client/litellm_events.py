"""One LiteLLM completion -> our usage event (pure: no LiteLLM import; the callback class is
``billing.client.litellm_callback``).

LiteLLM hands its success callbacks ``(kwargs, response_obj, start_time, end_time)``:

- ``id``: the response's id (``chatcmpl-...``), else LiteLLM's ``litellm_call_id``: a
  callback run twice records one event;
- ``customer``: ``kwargs["litellm_params"]["metadata"][customer_key]`` (what the caller
  passed as ``metadata={...}``), else the request's ``user``;
- ``timestamp``: ``end_time`` (LiteLLM passes naive local times: read as local, kept in UTC);
- ``properties``: the response's ``usage`` read by ``billing.client.usage.extract_usage``
  (an OpenAI-shaped usage: ``prompt_tokens`` less ``cached_tokens`` is ``input_tokens``,
  ``completion_tokens`` less ``reasoning_tokens`` is ``output_tokens``), ``model`` (the
  response's, else the request's) and ``feature`` / ``task`` from the metadata when given.

A completion without a customer, or without an id, is ``None`` (nothing to record: the
callback logs it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from billing.client.usage import _get, extract_usage, model_of
from billing.events import LLM_CALL


def _metadata(kwargs: dict[str, Any]) -> dict[str, Any]:
    params = kwargs.get("litellm_params") or {}
    metadata = params.get("metadata") if isinstance(params, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def customer_of(kwargs: dict[str, Any], customer_key: str = "customer") -> str | None:
    value = _metadata(kwargs).get(customer_key)
    if value is None:
        value = kwargs.get("user") or (kwargs.get("optional_params") or {}).get("user")
    return str(value) if value not in (None, "") else None


def utc(moment: Any) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    return moment.astimezone(UTC)  # a naive time is the local time (as LiteLLM takes datetime.now())


def litellm_event(kwargs: dict[str, Any], response_obj: Any, end_time: Any, *, customer_key: str = "customer",
                  feature_key: str = "feature", task_key: str = "task") -> dict[str, Any] | None:
    """The usage event of one successful LiteLLM call, or None when it names no customer or
    has no id or no end time."""
    customer = customer_of(kwargs, customer_key)
    event_id = _get(response_obj, "id") or kwargs.get("litellm_call_id")
    stamp = utc(end_time)
    if customer is None or not event_id or stamp is None:
        return None
    props: dict[str, Any] = extract_usage(response_obj)
    model = model_of(response_obj) or kwargs.get("model")
    if model:
        props["model"] = model
    metadata = _metadata(kwargs)
    for prop, key in (("feature", feature_key), ("task", task_key)):
        if metadata.get(key) not in (None, ""):
            props[prop] = str(metadata[key])
    return {"id": str(event_id), "customer": customer, "type": LLM_CALL,
            "timestamp": stamp.isoformat().replace("+00:00", "Z"), "properties": props}
