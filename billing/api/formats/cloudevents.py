"""CloudEvents 1.0 (JSON event format) -> our usage events.

Structured mode (``Content-Type: application/cloudevents+json``) is one event; the batch
mode (``application/cloudevents-batch+json``) a JSON array of them. The mapping:

- ``specversion`` must be ``"1.0"``;
- ``id`` -> the event id, kept as is when ``source`` is the configured own source
  (``BILLING_CLOUDEVENTS_SOURCE``, default ``billing``), else ``"<source>#<id>"`` (CloudEvents
  ids are unique per source only): the same CloudEvent sent again is the same event;
- ``type`` -> the event type, as is (``llm.call``, ``request``, or a type a plan meters);
- ``time`` -> the timestamp; required (the ledger needs the instant of the usage; a
  missing ``time`` is ``bad_timestamp``, never "now");
- ``subject`` -> the customer (or the attribute named by ``BILLING_CLOUDEVENTS_CUSTOMER_ATTRIBUTE``);
- ``data`` (a JSON object) -> the properties (absent: none); ``data_base64`` and a
  ``datacontenttype`` other than JSON are refused.

Other extension attributes are ignored. A problem is a ``Refused`` naming the attribute.
"""

from __future__ import annotations

from typing import Any

from billing.api.formats import Refused
from billing.errors import ErrorCode

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
SPEC_VERSION = "1.0"
DEFAULT_SOURCE = "billing"


def media_type(content_type: str | None) -> str | None:
    """``STRUCTURED`` or ``BATCH`` when the Content-Type is a CloudEvents one, else None."""
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    return media if media in (STRUCTURED, BATCH) else None


def event_id(ce_id: str, source: str, own_source: str = DEFAULT_SOURCE) -> str:
    return ce_id if source == own_source else f"{source}#{ce_id}"


def to_event(ce: Any, *, customer_attribute: str = "subject", own_source: str = DEFAULT_SOURCE) -> dict | Refused:
    """One CloudEvent (a decoded JSON value) as our event dict, or why not."""
    if not isinstance(ce, dict):
        return Refused(ErrorCode.EVENT_INVALID, "(event)", "a CloudEvent must be a JSON object")
    raw_id = ce.get("id")
    customer = ce.get(customer_attribute)
    shown_customer = customer if isinstance(customer, str) else None

    def refuse(code: ErrorCode, field: str, message: str) -> Refused:
        return Refused(code, field, f"CloudEvent {field!r}: {message}",
                       raw_id if isinstance(raw_id, str) else None, shown_customer)

    if ce.get("specversion") != SPEC_VERSION:
        return refuse(ErrorCode.EVENT_INVALID, "specversion",
                      f"must be {SPEC_VERSION!r}, not {ce.get('specversion')!r}")
    for name in ("id", "source", "type"):
        if not isinstance(ce.get(name), str) or not ce[name]:
            return refuse(ErrorCode.EVENT_INVALID, name, "is required (a non-empty string)")
    if not isinstance(ce.get("time"), str) or not ce["time"]:
        return refuse(ErrorCode.BAD_TIMESTAMP, "time",
                      "is required: the instant of the usage (RFC 3339 with a timezone)")
    if not isinstance(customer, str) or not customer:
        return refuse(ErrorCode.EVENT_INVALID, customer_attribute, "is required: it names the customer")
    if "data_base64" in ce:
        return refuse(ErrorCode.EVENT_INVALID, "data_base64", "binary data is not supported: send `data` as JSON")
    content_type = ce.get("datacontenttype")
    if content_type is not None and not _is_json(content_type):
        return refuse(ErrorCode.EVENT_INVALID, "datacontenttype", f"must be JSON, not {content_type!r}")
    data = ce.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return refuse(ErrorCode.EVENT_INVALID, "data", "must be a JSON object (the event's properties)")
    return {"id": event_id(ce["id"], ce["source"], own_source), "customer": customer, "type": ce["type"],
            "timestamp": ce["time"], "properties": data}


def to_events(body: Any, media: str, *, customer_attribute: str = "subject",
              own_source: str = DEFAULT_SOURCE) -> list[dict | Refused]:
    """The events of a structured (one) or batch (a list) body; a batch that is not a JSON
    array is ``ValueError``."""
    if media == STRUCTURED:
        items = [body]
    elif isinstance(body, list):
        items = body
    else:
        raise ValueError(f"the body of {BATCH} must be a JSON array of CloudEvents")
    return [to_event(ce, customer_attribute=customer_attribute, own_source=own_source) for ce in items]


def _is_json(content_type: Any) -> bool:
    if not isinstance(content_type, str):
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
