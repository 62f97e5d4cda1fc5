"""Validate and cost one raw event quickly (the ingestion hot path: no pydantic per event).

Same rules as ``billing.events.parse_event`` + ``billing.costs.event_cost`` (a test holds
them equal): an object with ``id``, ``customer``, ``type``, ``timestamp`` (ISO 8601 with a
timezone) and ``properties``; quantity properties are non-negative numbers; an event with
tokens names a model the cost book knows at the event's time.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, NamedTuple

from billing.costs import CostBook, UnknownModel, event_cost
from billing.errors import ErrorCode
from billing.events import UsageEvent, is_quantity_key
from billing.ledger.types import EPOCH

PICO = Decimal(10) ** 12
_ALLOWED_KEYS = frozenset({"id", "customer", "type", "timestamp", "properties"})
_TOKEN_PRICE_FIELDS = (("input_tokens", "input"), ("output_tokens", "output"),
                       ("cache_read_tokens", "cache_read"), ("cache_write_tokens", "cache_write"),
                       ("reasoning_tokens", "reasoning"))


class Prepared(NamedTuple):
    customer: str
    event_id: str
    type: str
    ts: int  # microseconds since the epoch, UTC
    properties_json: str
    model: str | None
    cost_pico: int
    properties: dict


class Rejection(NamedTuple):
    code: ErrorCode
    message: str


class Pricer:
    """Per-token prices in picodollars (integers) per (model, day, batch), cached."""

    def __init__(self, book: CostBook):
        self.book = book
        self._cache: dict[tuple[str, int, bool], tuple[int, ...] | None] = {}

    def pico_prices(self, model: str, ts_us: int, batch: bool) -> tuple[int, ...] | None:
        day = ts_us // 86_400_000_000
        key = (model, day, batch)
        if key not in self._cache:
            price = self.book.price_for(model, EPOCH + timedelta(days=day))  # may raise UnknownModel
            keep = (1 - price.batch_discount) if batch else Decimal(1)
            per_token = [getattr(price, field) * keep * 1_000_000 for _, field in _TOKEN_PRICE_FIELDS]
            exact = all(p == p.to_integral_value() for p in per_token)
            self._cache[key] = tuple(int(p) for p in per_token) if exact else None
        return self._cache[key]


def _reject(code: ErrorCode, message: str) -> Rejection:
    return Rejection(code, message)


def _quantity_problem(props: dict) -> Rejection | None:
    for key, value in props.items():
        if not is_quantity_key(key):
            continue
        if type(value) is int:
            if value < 0:
                return _reject(ErrorCode.NEGATIVE_QUANTITY, f"property {key!r} must not be negative, got {value}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
            return _reject(ErrorCode.NON_NUMERIC_QUANTITY, f"property {key!r} must be a number, got {value!r}")
        try:
            number = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
        except InvalidOperation:
            return _reject(ErrorCode.NON_NUMERIC_QUANTITY, f"property {key!r} must be a number, got {value!r}")
        if not number.is_finite():
            return _reject(ErrorCode.NON_NUMERIC_QUANTITY, f"property {key!r} must be a finite number")
        if number < 0:
            return _reject(ErrorCode.NEGATIVE_QUANTITY, f"property {key!r} must not be negative, got {value}")
    return None


def _parse_ts(value: Any) -> int | Rejection:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return _reject(ErrorCode.BAD_TIMESTAMP, f"timestamp {value!r} is not ISO 8601")
    else:
        return _reject(ErrorCode.BAD_TIMESTAMP, f"timestamp must be an ISO 8601 string, got {value!r}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        return _reject(ErrorCode.BAD_TIMESTAMP, f"timestamp {value!r} has no timezone (add Z or +00:00)")
    delta = dt - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def prepare(raw: Any, *, now_us: int, tolerance_us: int, known_types: frozenset[str],
            pricer: Pricer) -> Prepared | Rejection:
    if isinstance(raw, UsageEvent):
        raw = raw.model_dump()
    if not isinstance(raw, dict):
        return _reject(ErrorCode.EVENT_INVALID, f"an event must be a JSON object, got {type(raw).__name__}")
    event_id, customer, etype = raw.get("id"), raw.get("customer"), raw.get("type")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 200:
        return _reject(ErrorCode.EVENT_INVALID, "id must be a non-empty string of at most 200 characters")
    if not isinstance(customer, str) or not 0 < len(customer) <= 200:
        return _reject(ErrorCode.EVENT_INVALID, "customer must be a non-empty string of at most 200 characters")
    if not isinstance(etype, str) or not etype:
        return _reject(ErrorCode.EVENT_INVALID, "type must be a non-empty string")
    extra = raw.keys() - _ALLOWED_KEYS
    if extra:
        return _reject(ErrorCode.EVENT_INVALID, f"unknown field(s) {sorted(extra)}; put custom data in properties")
    props = raw.get("properties") or {}
    if not isinstance(props, dict):
        return _reject(ErrorCode.EVENT_INVALID, "properties must be an object")
    if etype not in known_types:
        return _reject(ErrorCode.UNKNOWN_EVENT_TYPE, f"unknown event type {etype!r}; no plan meters it")
    ts = _parse_ts(raw.get("timestamp"))
    if isinstance(ts, Rejection):
        return ts
    if ts > now_us + tolerance_us:
        return _reject(ErrorCode.TIMESTAMP_IN_FUTURE, "timestamp is too far in the future")
    problem = _quantity_problem(props)
    if problem:
        return problem
    try:
        cost = _cost_pico(raw, props, ts, pricer)
    except UnknownModel as exc:
        return _reject(ErrorCode.UNKNOWN_MODEL, exc.message)
    model = props.get("model")
    try:
        text = json.dumps(props, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return _reject(ErrorCode.EVENT_INVALID, "properties are not JSON-serialisable")
    return Prepared(customer, event_id, etype, ts, text, None if model is None else str(model)[:200], cost, props)


def _cost_pico(raw: dict, props: dict, ts: int, pricer: Pricer) -> int:
    if props.get("cost") is None:
        tokens = [props.get(name) for name, _ in _TOKEN_PRICE_FIELDS]
        if not any(tokens):
            return 0
        model = props.get("model")
        if model and all(t is None or type(t) is int for t in tokens):
            batch = props.get("batch")
            is_batch = batch.strip().lower() in ("true", "yes", "1") if isinstance(batch, str) else bool(batch)
            prices = pricer.pico_prices(str(model), ts, is_batch)
            if prices is not None:
                return sum((t or 0) * p for t, p in zip(tokens, prices))
    # general path: exact Decimal cost, rounded half-even to the picodollar
    event = UsageEvent.model_validate({**raw, "properties": props})
    return int((event_cost(event, pricer.book) * PICO).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
