"""Validate and cost one raw event quickly (the ingestion hot path: no pydantic per event).

Same rules as ``billing.events.parse_event`` + ``billing.costs.event_cost`` (a test holds
them equal): an object with ``id``, ``customer``, ``type``, ``timestamp`` (ISO 8601 with a
timezone) and ``properties``; quantity properties are non-negative numbers.

What cannot be priced or metered yet is kept, not rejected: an event whose tokens name a
model the cost book cannot price at the event's time (or no model) is ``unpriced`` (cost 0
until ``billing.ledger.recost`` fills it in), one whose type no plan meters is
``unmetered``; both carry the reason.
"""

from __future__ import annotations

import json
import math

import orjson
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, NamedTuple

from billing.costs import CostBook, UnknownModel, event_cost, event_tier
from billing.costs.rates import PROMPT_RATES, STANDARD_TIER
from billing.errors import BillingError, ErrorCode
from billing.events import (EARLIEST_INSTANT, INSTANT_WINDOW, LATEST_INSTANT, MAX_EVENT_COST, MAX_EVENT_QUANTITY,
                            MAX_PROPERTIES_BYTES, UsageEvent, is_quantity_key, properties_too_large)
from billing.instants import EPOCH, to_us

PICO = Decimal(10) ** 12
MAX_COST_PICO = int(MAX_EVENT_COST * PICO)
MAX_TYPE = 100  # usage_event.type
MAX_REASON = 500  # usage_event.unpriced / unmetered
TOO_COSTLY = f"the event's provider cost exceeds ${MAX_EVENT_COST:,} (split it into several events)"
_MISSING = object()
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
    unpriced: str | None = None  # why the cost book could not price it (cost_pico is then 0)
    unmetered: str | None = None  # why no plan meters it


class Rejection(NamedTuple):
    code: ErrorCode
    message: str


class Pricer:
    """Per-token prices in picodollars (integers) per (model, day, service tier), cached; so
    is a model the book cannot price that day (a new model's stream of events looks it up once).

    ``general_keys``: properties the per-token prices do not cover (1-hour cache writes,
    the book's per-unit prices): an event with one is costed by ``event_cost``."""

    def __init__(self, book: CostBook):
        self.book = book
        self.general_keys = frozenset({"cache_write_1h_tokens"}) | book.unit_properties
        self._cache: dict[tuple[str, int, str], tuple[int | None, ...] | str | None] = {}

    def pico_prices(self, model: str, ts_us: int, tier: str) -> tuple[int | None, ...] | None:
        """The five ``_TOKEN_PRICE_FIELDS`` per-token prices of the tier's standard context
        rates, then the largest prompt they price (None: any); None when not whole picodollars."""
        key = (model, ts_us // 86_400_000_000, tier)
        cached = self._cache.get(key, _MISSING)
        if cached is not _MISSING:
            if type(cached) is str:
                raise UnknownModel(cached)
            return cached
        if len(self._cache) > 100_000:
            self._cache.clear()
        try:
            card, factor = self.book.price_for(model, EPOCH + timedelta(days=key[1])).card(tier)
        except UnknownModel as exc:
            self._cache[key] = exc.message
            raise
        per_token = [getattr(card, field) * factor * 1_000_000 for _, field in _TOKEN_PRICE_FIELDS]
        exact = all(p == p.to_integral_value() for p in per_token)
        self._cache[key] = result = (*(int(p) for p in per_token), card.prompt_limit) if exact else None
        return result


def _reject(code: ErrorCode, message: str) -> Rejection:
    return Rejection(code, message)


_QUANTITY_KEYS: dict[str, bool] = {}

TASK_PROPERTIES = frozenset({"task"})  # the default agent task property (plans may name others)
MAX_TASK_ID = 200  # agent_task_usage.task_id


def _task_problem(props: dict, task_properties: frozenset[str]) -> Rejection | None:
    """An agent task id (the value of a task property) is stored as text of at most 200
    characters: longer, or with a NUL character, is this event's rejection."""
    for name in task_properties:
        value = props.get(name)
        if value is not None:
            text = value if isinstance(value, str) else str(value)
            if len(text) > MAX_TASK_ID or "\x00" in text:
                return _reject(ErrorCode.EVENT_INVALID, f"property {name!r} (an agent task id) must be at most "
                                                        f"{MAX_TASK_ID} characters, without NUL characters")
    return None


def _holds_nul(value: Any) -> bool:
    """A NUL character in any key or string of decoded JSON."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in k or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _quantity_problem(props: dict, measured: frozenset[str]) -> Rejection | None:
    for key, value in props.items():
        if type(value) is int and 0 <= value <= MAX_EVENT_QUANTITY:
            continue  # the common case: a non-negative integer count
        quantity = _QUANTITY_KEYS.get(key)
        if quantity is None:
            quantity = _QUANTITY_KEYS[key] = is_quantity_key(key)
        if not (quantity or key in measured):
            continue
        if type(value) is int:
            if value > MAX_EVENT_QUANTITY:
                return _too_large(key, value)
            return _reject(ErrorCode.NEGATIVE_QUANTITY, f"property {key!r} must not be negative, got {value}")
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
        if number > MAX_EVENT_QUANTITY:
            return _too_large(key, value)
    return None


def _too_large(key: str, value: Any) -> Rejection:
    return _reject(ErrorCode.QUANTITY_TOO_LARGE,
                   f"property {key!r} must be at most {MAX_EVENT_QUANTITY:,} per event, got {value}")


_HOUR_CACHE: dict[str, int] = {}  # "YYYY-MM-DDTHH" -> microseconds at that hour (-1: not one)


def _z_stamp(value: str) -> int | None:
    """Microseconds of a ``YYYY-MM-DDTHH:MM:SSZ`` timestamp (the common wire format), or
    None for anything else. Hours are cached: a stream costs a slice, a lookup and an int()."""
    if len(value) != 20 or value[19] != "Z" or value[13] != ":" or value[16] != ":":
        return None
    base = _HOUR_CACHE.get(value[:13])
    if base is None:
        base = _hour_base(value[:13])
    mmss = value[14:16] + value[17:19]
    # not "٥٩" or "0²": isdigit() takes those
    if base == -1 or not (mmss.isascii() and mmss.isdigit()) or mmss[0] > "5" or mmss[2] > "5":
        return None
    minute, second = divmod(int(mmss), 100)
    return base + minute * 60_000_000 + second * 1_000_000


def _hour_base(prefix: str) -> int:
    try:
        dt = datetime.fromisoformat(prefix + ":00:00+00:00")
        base = ((dt - EPOCH).days * 86_400 + (dt - EPOCH).seconds) * 1_000_000 if prefix[10] == "T" else -1
    except ValueError:
        base = -1
    if not EARLIEST_US <= base < LATEST_US:  # outside the window: the general rules reject it
        base = -1
    if len(_HOUR_CACHE) > 100_000:
        _HOUR_CACHE.clear()
    _HOUR_CACHE[prefix] = base
    return base


EARLIEST_US, LATEST_US = to_us(EARLIEST_INSTANT), to_us(LATEST_INSTANT)


def _window_problem(ts: int) -> Rejection | None:
    """A timestamp outside the instants the engine takes (``billing.events.instant_problem``)."""
    if EARLIEST_US <= ts < LATEST_US:
        return None
    return _reject(ErrorCode.BAD_TIMESTAMP, f"timestamp must be {INSTANT_WINDOW}")


_SMALL_TEXT = MAX_PROPERTIES_BYTES // 4  # characters that cannot pass the limit in UTF-8


def _size_problem(text: str) -> Rejection | None:
    """Properties over ``MAX_PROPERTIES_BYTES`` as UTF-8 JSON (``billing.events.check_storable``)."""
    if len(text) <= _SMALL_TEXT:
        return None
    size = len(text.encode())
    if size <= MAX_PROPERTIES_BYTES:
        return None
    return _reject(ErrorCode.EVENT_TOO_LARGE, properties_too_large(size))


def _parse_ts(value: Any) -> int | Rejection:
    if type(value) is str:
        ts = _z_stamp(value)
        if ts is not None:
            return ts
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
            pricer: Pricer, measured: frozenset[str] = frozenset(),
            task_properties: frozenset[str] = TASK_PROPERTIES) -> Prepared | Rejection:
    if type(raw) is not dict:
        if isinstance(raw, UsageEvent):
            raw = raw.model_dump()
        elif not isinstance(raw, dict):
            return _reject(ErrorCode.EVENT_INVALID, f"an event must be a JSON object, got {type(raw).__name__}")
    event_id, customer, etype = raw.get("id"), raw.get("customer"), raw.get("type")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 200:
        return _reject(ErrorCode.EVENT_INVALID, "id must be a non-empty string of at most 200 characters")
    if not isinstance(customer, str) or not 0 < len(customer) <= 200:
        return _reject(ErrorCode.EVENT_INVALID, "customer must be a non-empty string of at most 200 characters")
    if not isinstance(etype, str) or not etype or len(etype) > MAX_TYPE:
        return _reject(ErrorCode.EVENT_INVALID, f"type must be a non-empty string of at most {MAX_TYPE} characters")
    if not (event_id.isascii() and customer.isascii() and etype.isascii()):
        try:
            event_id.encode("utf-8"), customer.encode("utf-8"), etype.encode("utf-8")
        except UnicodeEncodeError:
            return _reject(ErrorCode.EVENT_INVALID, "id, customer and type must be valid Unicode text")
    if "\x00" in event_id or "\x00" in customer or "\x00" in etype:  # PostgreSQL cannot store it
        return _reject(ErrorCode.EVENT_INVALID, "id, customer and type must not contain NUL characters")
    if not _ALLOWED_KEYS.issuperset(raw):
        extra = sorted(raw.keys() - _ALLOWED_KEYS)
        return _reject(ErrorCode.EVENT_INVALID, f"unknown field(s) {extra}; put custom data in properties")
    props = raw.get("properties")
    if props is None:
        props = {}
    elif not isinstance(props, dict):
        return _reject(ErrorCode.EVENT_INVALID, "properties must be an object")
    unmetered = None if etype in known_types else f"no plan meters event type {etype!r}"
    ts = _parse_ts(raw.get("timestamp"))
    if isinstance(ts, Rejection):
        return ts
    outside = _window_problem(ts)
    if outside:
        return outside
    if ts > now_us + tolerance_us:
        return _reject(ErrorCode.TIMESTAMP_IN_FUTURE, "timestamp is too far in the future")
    problem = _quantity_problem(props, measured) or _task_problem(props, task_properties)
    if problem:
        return problem
    unpriced = None
    try:
        cost = _cost_pico(raw, props, ts, pricer)
    except UnknownModel as exc:  # kept: priced when a price arrives
        cost, unpriced = 0, exc.message[:MAX_REASON]
    except BillingError as exc:
        return _reject(exc.code, exc.message)
    if cost > MAX_COST_PICO:
        return _reject(ErrorCode.QUANTITY_TOO_LARGE, TOO_COSTLY)
    model = props.get("model")
    if model is not None and "\x00" in str(model):
        return _reject(ErrorCode.EVENT_INVALID, "properties.model must not contain NUL characters")
    try:
        text = orjson.dumps(props, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):
        return _reject(ErrorCode.EVENT_INVALID, "properties are not JSON-serialisable")
    if "null" in text and _non_finite(props):  # (orjson writes them as null: the value would change)
        return _reject(ErrorCode.EVENT_INVALID, "properties must not hold NaN or Infinity (not JSON numbers)")
    too_large = _size_problem(text)
    if too_large:
        return too_large
    if "\\u0000" in text and _holds_nul(json.loads(text)):  # PostgreSQL cannot read such JSON back
        return _reject(ErrorCode.EVENT_INVALID, "properties must not contain NUL characters")
    return Prepared(customer, event_id, etype, ts, text, None if model is None else str(model)[:200], cost, props,
                    unpriced, unmetered)


def raw_key(raw: Any) -> tuple[str | None, str | None]:
    """(id, customer) of an event as given, each None when it is not text (what a result
    names a rejected event by)."""
    rid = raw.get("id") if isinstance(raw, dict) else getattr(raw, "id", None)
    cust = raw.get("customer") if isinstance(raw, dict) else getattr(raw, "customer", None)
    return (rid if isinstance(rid, str) else None, cust if isinstance(cust, str) else None)


UNPRICED_MODEL = "unpriced_model"  # warning codes (an accepted event's result, quota answers)
UNMETERED_TYPE = "unmetered_type"


def warning_of(p: Prepared) -> tuple[str, str]:
    """(code, message) of an event stored unpriced (first) or unmetered."""
    if p.unpriced:
        rest = f"; also {p.unmetered}" if p.unmetered else ""
        return UNPRICED_MODEL, f"stored unpriced (cost 0 until a price arrives): {p.unpriced}{rest}"
    return UNMETERED_TYPE, f"stored unmetered: {p.unmetered}"


def warnings_of(p: Prepared) -> list[dict[str, str]]:
    """The ``warnings`` of a quota answer for this event."""
    out = []
    if p.unpriced:
        out.append({"code": UNPRICED_MODEL, "message": f"stored unpriced (cost 0 until a price arrives): {p.unpriced}"})
    if p.unmetered:
        out.append({"code": UNMETERED_TYPE, "message": f"stored unmetered: {p.unmetered}"})
    return out


def reprice(p: Prepared, pricer: Pricer) -> Prepared:
    """An unpriced event (prepared, or read back from the ledger) priced with ``pricer``'s
    book: its cost filled in and ``unpriced`` cleared; still unpriced (with the new reason)
    when the book cannot price it either, or prices it above the per-event maximum."""
    raw = {"id": p.event_id, "customer": p.customer, "type": p.type, "timestamp": EPOCH + timedelta(microseconds=p.ts),
           "properties": p.properties}
    try:
        cost = _cost_pico(raw, p.properties, p.ts, pricer)
    except UnknownModel as exc:
        return p._replace(cost_pico=0, unpriced=exc.message[:MAX_REASON])
    if cost > MAX_COST_PICO:
        return p._replace(cost_pico=0, unpriced=TOO_COSTLY)
    return p._replace(cost_pico=cost, unpriced=None)


def _non_finite(value: Any) -> bool:
    """Whether ``value`` holds a NaN or infinite float, at any depth: not JSON numbers (an
    import rejects such a line), and the stored JSON would hold null in their place."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(map(_non_finite, value.values()))
    if isinstance(value, (list, tuple)):
        return any(map(_non_finite, value))
    return False


def _cost_pico(raw: dict, props: dict, ts: int, pricer: Pricer) -> int:
    if props.get("cost") is None and not (pricer.general_keys & props.keys()):
        get = props.get
        tokens = (get("input_tokens"), get("output_tokens"), get("cache_read_tokens"),
                  get("cache_write_tokens"), get("reasoning_tokens"))
        i, o, cr, cw, r = tokens
        if not (i or o or cr or cw or r):
            return 0
        model = get("model")
        if model and ((i is None or type(i) is int) and (o is None or type(o) is int) and (cr is None or type(cr) is int)
                      and (cw is None or type(cw) is int) and (r is None or type(r) is int)):
            prices = pricer.pico_prices(model if type(model) is str else str(model), ts, event_tier(props))
            if prices is not None and (prices[5] is None or (i or 0) + (cr or 0) + (cw or 0) <= prices[5]):
                pi, po, pcr, pcw, pr, _ = prices
                return (i or 0) * pi + (o or 0) * po + (cr or 0) * pcr + (cw or 0) * pcw + (r or 0) * pr
    # general path: exact Decimal cost, rounded half-even to the picodollar
    event = UsageEvent.model_validate({**raw, "properties": props})
    return int((event_cost(event, pricer.book) * PICO).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


# ------------------------------------------------------------------ the batch fast path

_TOKEN_SLOTS = {name: slot for slot, (name, _) in enumerate(_TOKEN_PRICE_FIELDS)}
# the token properties that form the prompt (costs.prompt_tokens; 1-hour writes take the general path)
_PROMPT_KEYS = frozenset(name for name, rate in _TOKEN_PRICE_FIELDS if rate in PROMPT_RATES)


def _shape(keys: tuple[str, ...], measured: frozenset[str], task_properties: frozenset[str],
           general: frozenset[str]) -> tuple | None:
    """For properties with these keys: (the quantity keys, (token key, price slot) pairs,
    the task keys, the prompt's token keys), or None when the general rules must decide (an
    explicit cost, a service tier or batch flag, a ``Pricer.general_keys`` property)."""
    if "cost" in keys or "batch" in keys or "service_tier" in keys or not general.isdisjoint(keys):
        return None
    quantities = tuple(k for k in keys if is_quantity_key(k) or k in measured)
    return (quantities, tuple((k, _TOKEN_SLOTS[k]) for k in keys if k in _TOKEN_SLOTS),
            tuple(k for k in keys if k in task_properties), tuple(k for k in keys if k in _PROMPT_KEYS))


def prepare_batch(raws: list[Any], *, now_us: int, tolerance_us: int, known_types: frozenset[str],
                  pricer: Pricer, measured: frozenset[str] = frozenset(),
                  task_properties: frozenset[str] = TASK_PROPERTIES,
                  flagged: dict[int, Prepared] | None = None) -> list[Prepared | Rejection]:
    """``[prepare(raw) for raw in raws]``, faster: the common shape of an event (a dict of
    exactly the five fields, string id/customer/type, a ``...Z`` second-precision
    timestamp, properties whose quantities are non-negative integers, a known model at
    integer picodollar prices, a metered type) is handled by ``_common``; anything else
    goes through ``prepare``. A test holds the two equal on arbitrary (also malformed)
    events. ``flagged`` (if given) receives position -> event of the unpriced or unmetered
    ones (only ``prepare`` makes those, so the common path pays nothing for it)."""
    limit = now_us + tolerance_us
    prices: dict[tuple[str, int], tuple[int, ...] | None] = {}
    shapes: dict[tuple[str, ...], tuple | None] = {}
    out: list[Prepared | Rejection] = []
    append = out.append
    for raw in raws:
        p = _common(raw, limit, known_types, pricer, measured, task_properties, prices, shapes)
        if p is None:
            p = prepare(raw, now_us=now_us, tolerance_us=tolerance_us, known_types=known_types, pricer=pricer,
                        measured=measured, task_properties=task_properties)
            if flagged is not None and type(p) is Prepared and (p.unpriced or p.unmetered):
                flagged[len(out)] = p
        append(p)
    return out


def _common(raw: Any, limit: int, known_types: frozenset[str], pricer: Pricer, measured: frozenset[str],
            task_properties: frozenset[str], prices_cache: dict, shapes: dict) -> Prepared | None:
    """The event as ``prepare`` would have it, when it has the common shape; else None."""
    if type(raw) is not dict or len(raw) != 5:
        return None
    try:
        event_id, customer, etype = raw["id"], raw["customer"], raw["type"]
        stamp, props = raw["timestamp"], raw["properties"]
    except KeyError:
        return None
    if not (type(event_id) is str and type(customer) is str and type(etype) is str and type(props) is dict
            and type(stamp) is str and 0 < len(event_id) <= 200 and 0 < len(customer) <= 200
            and etype in known_types and event_id.isascii() and customer.isascii()
            and "\x00" not in event_id and "\x00" not in customer):
        return None
    ts = _z_stamp(stamp)
    if ts is None or ts > limit:  # (None outside the window of instants: _hour_base)
        return None
    keys = tuple(props)
    shape = shapes.get(keys, _MISSING)
    if shape is _MISSING:
        shape = shapes[keys] = _shape(keys, measured, task_properties, pricer.general_keys)
    if shape is None:  # "cost", a tier...: the general rules
        return None
    quantities, slots, tasks, prompt_keys = shape
    for key in quantities:  # every quantity a plain int in range
        value = props[key]
        if type(value) is not int or value < 0 or value > MAX_EVENT_QUANTITY:
            return None
    for key in tasks:  # every task id plain text that fits
        value = props[key]
        if type(value) is not str or len(value) > MAX_TASK_ID or "\x00" in value:
            return None
    model = props.get("model")
    if model is not None and type(model) is not str:
        return None
    cost = 0
    if slots:
        if type(model) is not str or not model:  # tokens without a model: the general rules
            return None
        pkey = (model, ts // 86_400_000_000)
        prices = prices_cache.get(pkey, _MISSING)
        if prices is _MISSING:
            try:
                prices = pricer.pico_prices(model, ts, STANDARD_TIER)
            except BillingError:  # UnknownModel among them
                prices = None
            prices_cache[pkey] = prices
        if prices is None:  # unknown model or inexact price
            return None
        prompt_limit = prices[5]
        if prompt_limit is not None:  # a context tier over some prompt size: the general rules above it
            prompt = 0
            for key in prompt_keys:
                prompt += props[key]
            if prompt > prompt_limit:
                return None
        for key, slot in slots:
            cost += props[key] * prices[slot]
        if cost > MAX_COST_PICO:
            return None
    try:
        text = orjson.dumps(props).decode()
    except (TypeError, orjson.JSONEncodeError):
        return None
    if len(text) > _SMALL_TEXT and _size_problem(text):  # the general rules reject it
        return None
    if "\\u0000" in text or ("null" in text and _non_finite(props)):  # the general rules decide
        return None
    return _tuple_new(Prepared, (customer, event_id, etype, ts, text,
                                 None if model is None else (model if type(model) is str else str(model))[:200],
                                 cost, props, None, None))


_tuple_new = tuple.__new__
