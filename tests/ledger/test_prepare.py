"""The ingestion fast path (``billing.ledger.prepare``) against the reference rules
(``billing.events.parse_event`` + ``billing.costs.event_cost``): the same accept/reject
decision and reason, and the same cost (in picodollars) for every accepted event.

Pure: no database.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from billing.costs import CostBook, UnknownModel, event_cost
from billing.errors import BillingError, ErrorCode
from billing.events import BUILTIN_TYPES, MAX_EVENT_COST, EventError, parse_event
from billing.ledger.ingest import measured_properties
from billing.ledger.prepare import Prepared, Pricer, Rejection, prepare, prepare_batch
from billing.store.types import to_us
from tests.support.db import shipped_catalog

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
TOLERANCE = timedelta(minutes=5)
PICO = Decimal(10) ** 12
BOOK = CostBook.load_default()
CATALOG = shipped_catalog()
KNOWN_TYPES = frozenset(BUILTIN_TYPES | {t for p in CATALOG.all() for t in p.event_types})
MEASURED = measured_properties(CATALOG) | {"pages"}  # "pages": as if a plan summed it
KNOWN_MODELS = ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5", "gpt-4o", "gpt-5-mini", "o3",
                "gemini-2.5-pro", "claude-3-haiku", "gpt-5.5"]  # context tiers: sonnet 4.5, 2.5 pro, 5.5
TOKEN_KEYS = ["input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens",
              "cache_write_1h_tokens"]
# what selects the rate card: standard names, tiers some models have, one none has, malformed ones
SERVICE_TIERS = ["standard", "default", "auto", "batch", "flex", "priority", "scale", " Priority ", 5, ""]


# ----------------------------------------------------------------------------- oracle

def reference(raw, now: datetime = NOW) -> tuple:
    """("accepted", exact Decimal cost, unpriced, unmetered) or ("rejected", code), by the
    reference rules: an event the book cannot price is kept at cost 0, one of a type no plan
    meters is kept too."""
    try:
        event = parse_event(raw, MEASURED)
    except EventError as exc:
        return "rejected", exc.code
    unmetered = event.type not in KNOWN_TYPES
    if event.timestamp > now + TOLERANCE:
        return "rejected", ErrorCode.TIMESTAMP_IN_FUTURE
    try:
        cost = event_cost(event, BOOK)
        if (cost * PICO).quantize(Decimal(1), rounding=ROUND_HALF_EVEN) > MAX_EVENT_COST * PICO:
            return "rejected", ErrorCode.QUANTITY_TOO_LARGE
        return "accepted", cost, False, unmetered
    except UnknownModel:
        return "accepted", Decimal(0), True, unmetered
    except BillingError as exc:
        return "rejected", exc.code


def fast(raw, now: datetime = NOW) -> Prepared | Rejection:
    return prepare(raw, now_us=to_us(now), tolerance_us=int(TOLERANCE.total_seconds()) * 1_000_000,
                   known_types=KNOWN_TYPES, pricer=Pricer(BOOK), measured=MEASURED)


def check_agrees(raw, *, same_code: bool = True) -> None:
    want, detail, *flags = reference(raw)
    got = fast(raw)
    if want == "rejected":
        assert isinstance(got, Rejection), f"reference rejects ({detail}), prepare accepts: {raw!r}"
        if same_code:
            assert got.code == detail, f"reference {detail}, prepare {got.code}: {raw!r}"
        return
    assert isinstance(got, Prepared), f"reference accepts, prepare rejects ({got}): {raw!r}"
    assert [bool(got.unpriced), bool(got.unmetered)] == flags, raw
    exact = detail * PICO
    assert got.cost_pico == int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    if exact == exact.to_integral_value():  # every integer token count at shipped prices
        assert got.cost_pico == exact
    event = parse_event(raw)
    assert got.ts == to_us(event.timestamp)
    assert (got.customer, got.event_id, got.type) == (event.customer, event.id, event.type)


# ------------------------------------------------------------------------ strategies

def _iso(dt: datetime, style: int) -> str:
    if style == 0:
        return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if style == 1:
        return dt.isoformat()
    if style == 2:
        return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return dt.isoformat(timespec="milliseconds")


offsets = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7)),
                           timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=14))])
instants = st.datetimes(datetime(2023, 1, 1), datetime(2026, 11, 16), timezones=offsets)
good_timestamps = st.builds(_iso, instants, st.integers(0, 3))


@st.composite
def mangled_timestamps(draw) -> str:
    """A canonical timestamp with one character replaced, inserted or removed."""
    text = draw(good_timestamps)
    pos = draw(st.integers(0, len(text) - 1))
    char = draw(st.sampled_from(list("0123456789+- TtZz:._x") + ["\u0661", "\uff11"]))
    how = draw(st.integers(0, 2))
    if how == 0:
        return text[:pos] + char + text[pos + 1:]
    if how == 1:
        return text[:pos] + char + text[pos:]
    return text[:pos] + text[pos + 1:]


# outside the window of instants the engine takes (2000-01-01 until before 2100-01-01, UTC):
# pre-epoch events were accepted and never billed; year 1 or 9999 with an extreme offset
# overflowed date arithmetic
EXTREME_TIMESTAMPS = ["0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00",
                      "9999-12-31T23:59:59Z", "1969-07-20T20:17:00Z", "1969-12-31T23:59:59.999999+00:00",
                      "1970-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2000-01-01T13:59:59+14:00",
                      "2100-01-01T00:00:00Z", "2099-12-31T23:00:00-14:00"]
EDGE_TIMESTAMPS = ["2000-01-01T00:00:00Z", "1999-12-31T10:00:00-14:00", "2000-01-01T14:00:00+14:00",
                   "2099-12-31T23:59:59Z"]  # in it (the last one in the future of NOW)

any_timestamps = st.one_of(
    good_timestamps, mangled_timestamps(),
    st.builds(lambda d: d.replace(tzinfo=None).isoformat(), instants),  # no timezone
    st.sampled_from(["yesterday", "", "2026-10-03", "2026-02-30T00:00:00Z", "2026-10-03T12:00:00+25:00"]),
    st.sampled_from(EXTREME_TIMESTAMPS + EDGE_TIMESTAMPS),
    st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31), timezones=offsets).map(lambda d: d.isoformat()),
)

quantities = st.one_of(
    st.integers(0, 5_000_000),
    st.sampled_from([10**12, 10**12 + 1, 10**11 * 7, 2**63, 2**70]),
    st.integers(-1000, -1),
    st.decimals(min_value=0, max_value=10_000, places=3).map(str),
    st.floats(min_value=0, max_value=1e6, allow_nan=False).map(lambda f: round(f, 3)),
    st.sampled_from(["12", " 7 ", "1e3", "-0", "-5", "abc", "", "NaN", "Infinity", None, True, False,
                     float("nan"), float("inf"), -1.5, [1], {"a": 1}]),
)
plain_values = st.one_of(st.text(string.ascii_letters + string.digits + "-_", max_size=12), st.integers(-5, 5),
                         st.booleans(), st.none(),
                         st.sampled_from([2**64, 2**63, -(2**63) - 1, "\ud800", "caf\u00e9"]))  # storable?


@st.composite
def properties(draw) -> dict:
    props: dict = {}
    if draw(st.booleans()):
        props["model"] = draw(st.sampled_from(KNOWN_MODELS + ["no-such-model", "GPT-4O", "", 7]))
    for key in draw(st.lists(st.sampled_from(TOKEN_KEYS + ["quantity", "steps", "units", "amount", "pages",
                                                           "web_search_requests"]),
                             max_size=4, unique=True)):
        props[key] = draw(quantities)
    if draw(st.integers(0, 5)) == 0:
        props["batch"] = draw(st.sampled_from([True, False, "true", "no", 1, 0]))
    if draw(st.integers(0, 4)) == 0:
        props["service_tier"] = draw(st.sampled_from(SERVICE_TIERS))
    if draw(st.integers(0, 6)) == 0:
        props["cost"] = draw(st.sampled_from(["0.0123", "0", 0.5, 2, "-1", "abc", True, None]))
    for key in draw(st.lists(st.sampled_from(["feature", "outcome", "outcome_id", "user", "task"]),
                             max_size=3, unique=True)):
        props[key] = draw(plain_values)
    if draw(st.integers(0, 15)) == 0:
        props["note"] = draw(large_text)
    return props


# around MAX_PROPERTIES_BYTES (32 KiB of JSON), in one- and two-byte UTF-8 characters
large_text = st.one_of(st.integers(32_600, 32_800).map(lambda n: "x" * n),
                       st.integers(16_300, 16_400).map(lambda n: "\u00e9" * n))


@st.composite
def raw_events(draw) -> object:
    """Mostly well-formed events, each field sometimes broken (several faults may combine)."""
    if draw(st.integers(0, 40)) == 0:
        return draw(st.sampled_from([None, [], "event", 42]))
    raw: dict = {
        "id": draw(st.one_of(st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=20),
                             st.sampled_from(["", "x" * 201, 5, None]))),
        "customer": draw(st.one_of(st.sampled_from(["acme", "c1", "u\u00e9", "x\ud800"]),
                                   st.sampled_from(["", 3, None]))),
        "type": draw(st.sampled_from(sorted(KNOWN_TYPES) + ["bogus.type", "", 5])),
        "timestamp": draw(st.one_of(good_timestamps, any_timestamps,
                                    st.just((NOW + timedelta(days=1)).isoformat()))),  # in the future
        "properties": draw(st.one_of(properties(), st.sampled_from([None, [], "x", 0]))),
    }
    for key in draw(st.lists(st.sampled_from(["id", "customer", "type", "timestamp", "properties"]), max_size=1)):
        del raw[key]
    if draw(st.integers(0, 30)) == 0:
        raw["extra"] = 1
    return raw


@st.composite
def single_fault_events(draw) -> dict:
    """A valid event with at most one problem, so the reason code is unambiguous."""
    model = draw(st.sampled_from(KNOWN_MODELS))
    props: dict = {"model": model}
    for key in draw(st.lists(st.sampled_from(TOKEN_KEYS), min_size=1, max_size=5, unique=True)):
        props[key] = draw(st.integers(0, 3_000_000))
    if "cache_write_1h_tokens" in props:  # the 1-hour part of the cache writes
        props["cache_write_tokens"] = props.get("cache_write_tokens", 0) + props["cache_write_1h_tokens"]
    if draw(st.booleans()):
        props["batch"] = draw(st.sampled_from([True, False, "true", "no"]))
    if draw(st.integers(0, 2)) == 0:
        props["service_tier"] = draw(st.sampled_from(SERVICE_TIERS[:7]))
    if draw(st.integers(0, 3)) == 0:
        props["web_search_requests"] = draw(st.integers(0, 40))
    if draw(st.booleans()):
        props["feature"] = draw(st.sampled_from(["support-chat", "search"]))
    raw = {"id": draw(st.text(string.ascii_letters + string.digits, min_size=1, max_size=12)), "customer": "acme",
           "type": "llm.call",
           "timestamp": draw(st.builds(_iso, st.datetimes(datetime(2025, 10, 1), datetime(2026, 11, 14),
                                                          timezones=offsets), st.integers(0, 3))),
           "properties": props}
    fault = draw(st.sampled_from(["none", "none", "type", "timestamp", "mangled", "future", "negative", "non_numeric",
                                  "model", "no_model", "id", "extra", "properties", "token_text", "token_float",
                                  "cost", "cost_bad", "extreme", "large"]))
    token = draw(st.sampled_from(sorted(k for k in props if k.endswith("_tokens"))))
    if fault == "type":
        raw["type"] = "bogus.type"
    elif fault == "timestamp":
        raw["timestamp"] = draw(st.sampled_from(["yesterday", "2026-10-03T12:00:00", "2026-13-01T00:00:00Z", 17.5]))
    elif fault == "mangled":
        raw["timestamp"] = draw(mangled_timestamps())
    elif fault == "future":
        raw["timestamp"] = (NOW + timedelta(minutes=draw(st.integers(6, 100_000)))).isoformat()
    elif fault == "negative":
        props[token] = draw(st.sampled_from([-1, -2.5, "-3"]))
    elif fault == "non_numeric":
        props[token] = draw(st.sampled_from(["many", "", None, True, [1], "NaN"]))
    elif fault == "model":
        props["model"] = draw(st.sampled_from(["no-such-model", "gpt-4o-typo", 5]))
    elif fault == "no_model":
        del props["model"]
    elif fault == "id":
        raw["id"] = draw(st.sampled_from(["", "x" * 201, 12]))
    elif fault == "extra":
        raw["meta"] = {}
    elif fault == "properties":
        raw["properties"] = draw(st.sampled_from([None, [], "x", 0]))
    elif fault == "token_text":
        props[token] = str(props[token])
    elif fault == "token_float":
        props[token] = props[token] + 0.5
    elif fault == "cost":
        props["cost"] = draw(st.sampled_from(["0.0123", "1", 2, 0.25]))
    elif fault == "cost_bad":
        props["cost"] = draw(st.sampled_from(["-1", "abc", True]))
    elif fault == "extreme":
        raw["timestamp"] = draw(st.sampled_from(EXTREME_TIMESTAMPS))
    elif fault == "large":
        props["note"] = draw(large_text)
    return raw


# ----------------------------------------------------------------------------- tests

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(single_fault_events())
@example({"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z",
          "properties": {"model": "claude-sonnet-4-5", "input_tokens": 2100, "output_tokens": 400}})
@example({"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z",
          "properties": {"model": "gpt-4o", "input_tokens": 1000, "batch": True}})
@example({"id": "a", "customer": "acme", "type": "request", "timestamp": "2026-10-03T12:00:5\u0669Z"})  # Arabic 9
@example({"id": "a", "customer": "acme", "type": "request", "timestamp": "2026-10-03T12:00:0\u00b2Z"})  # superscript
@example({"id": "a", "customer": "acme", "type": "request", "timestamp": "2026-10-03T1\u0662:00:00Z"})
@example({"id": "a", "customer": "acme", "type": "request", "timestamp": "2026-10-03T12:00:00+05:30:15"})
@example({"id": "a", "customer": "acme", "type": "request", "timestamp": "20261003T120000Z"})
@example({"id": "a", "customer": "acme", "type": "request", "timestamp": 1790000000})
@example({"id": "a", "customer": "acme", "type": "request", "timestamp": "2026-10-03T12:00:00Z", "properties": None})
@example({"id": "a", "customer": "acme", "type": "request", "timestamp": "2026-10-03T12:00:00Z", "properties": []})
@example({"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z",
          "properties": {"cost": "-1"}})
@example({"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z",
          "properties": {"cost": "abc"}})
def test_single_problem_events_get_the_same_decision_and_reason(raw):
    check_agrees(raw, same_code=True)


@FAST
@given(raw_events())
def test_any_event_gets_the_same_decision(raw):
    """Events with several problems may be reported by either of them; the decision agrees."""
    check_agrees(raw, same_code=False)


@pytest.mark.parametrize("raw, code", [
    ({"id": "a", "customer": "acme", "type": "request", "timestamp": "2026-10-03T12:00:00"}, "bad_timestamp"),
    ({"id": "a", "customer": "acme", "type": "request", "timestamp": "tomorrow"}, "bad_timestamp"),
    ({"id": "a", "customer": "acme", "type": "request", "timestamp": "2026-11-16T12:00:00Z"}, "timestamp_in_future"),
    ({"id": "a", "customer": "acme", "type": "t" * 101, "timestamp": "2026-10-03T12:00:00Z"}, "event_invalid"),
    ({"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z",
      "properties": {"model": "gpt-4o", "input_tokens": -5}}, "negative_quantity"),
    ({"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z",
      "properties": {"model": "gpt-4o", "input_tokens": "lots"}}, "non_numeric_quantity"),
    ({"id": "", "customer": "acme", "type": "request", "timestamp": "2026-10-03T12:00:00Z"}, "event_invalid"),
    ({"id": "a", "customer": "acme", "type": "request", "timestamp": "2026-10-03T12:00:00Z", "x": 1},
     "event_invalid"),
    (["not", "an", "object"], "event_invalid"),
    ({"id": "a\ud800", "customer": "acme", "type": "request", "timestamp": "2026-10-03T12:00:00Z"},
     "event_invalid"),  # a lone surrogate cannot be stored
    ({"id": "a", "customer": "acme", "type": "request", "timestamp": "2026-10-03T12:00:00Z",
      "properties": {"user": "\udc00"}}, "event_invalid"),
    ({"id": "a", "customer": "acme", "type": "request", "timestamp": "2026-10-03T12:00:00Z",
      "properties": {"pages": "many"}}, "non_numeric_quantity"),  # a property a plan sums
    ({"id": "a", "customer": "acme", "type": "request", "timestamp": "2026-10-03T12:00:00Z",
      "properties": {"pages": -2}}, "negative_quantity"),
    ({"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z",
      "properties": {"model": "gpt-4o", "input_tokens": 10**12 + 1}}, "quantity_too_large"),
    ({"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z",
      "properties": {"model": "claude-opus-4-1", "output_tokens": 10**12}}, "quantity_too_large"),  # $75M
    ({"id": "a", "customer": "acme", "type": "request", "timestamp": "2026-10-03T12:00:00Z",
      "properties": {"cost": "1000000.000001"}}, "quantity_too_large"),
    *[({"id": "a", "customer": "acme", "type": "request", "timestamp": stamp}, "bad_timestamp")
      for stamp in EXTREME_TIMESTAMPS],
    ({"id": "a", "customer": "acme", "type": "request", "timestamp": datetime(1, 1, 1, tzinfo=timezone(
        timedelta(hours=14)))}, "bad_timestamp"),
    ({"id": "a", "customer": "acme", "type": "request", "timestamp": "2026-10-03T12:00:00Z",
      "properties": {"note": "x" * 32_800}}, "event_too_large"),
    ({"id": "a", "customer": "acme", "type": "request", "timestamp": "2026-10-03T12:00:00Z",
      "properties": {"note": "\u00e9" * 16_400}}, "event_too_large"),  # 32,800 bytes in 16,400 characters
])
def test_reason_codes(raw, code):
    got = fast(raw)
    assert isinstance(got, Rejection) and got.code == code
    assert reference(raw) == ("rejected", code)


@pytest.mark.parametrize("raw, unpriced, unmetered", [
    ({"id": "a", "customer": "acme", "type": "nope", "timestamp": "2026-10-03T12:00:00Z"}, None,
     "no plan meters event type 'nope'"),
    ({"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z",
      "properties": {"model": "nope", "input_tokens": 5}}, "no price for model 'nope'", None),
    ({"id": "a", "customer": "acme", "type": "embedding", "timestamp": "2026-10-03T12:00:00Z",
      "properties": {"model": "text-embedding-9", "input_tokens": 5}}, "no price for model 'text-embedding-9'",
     "no plan meters event type 'embedding'"),
    ({"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z",
      "properties": {"input_tokens": 5}}, "reports tokens but no 'model' property", None),
    ({"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2025-01-01T00:00:00Z",  # before its first price
      "properties": {"model": "claude-sonnet-4-5", "input_tokens": 5}}, "in force on 2025-01-01", None),
    ({"id": "a", "customer": "acme", "type": "vector.search", "timestamp": "2026-10-03T12:00:00Z",
      "properties": {"model": "nope", "cost": "0.002"}}, None, "no plan meters event type 'vector.search'"),
])
def test_what_cannot_be_priced_or_metered_is_kept_with_its_reason(raw, unpriced, unmetered):
    got = fast(raw)
    assert isinstance(got, Prepared), got
    assert (got.unpriced is None) == (unpriced is None) and (got.unmetered is None) == (unmetered is None)
    assert unpriced is None or unpriced in got.unpriced
    assert unmetered is None or unmetered == got.unmetered
    assert got.cost_pico == (0 if unpriced else int(Decimal(raw.get("properties", {}).get("cost", 0)) * PICO))
    assert batch([raw]) == [got]


def test_reprice_fills_in_the_cost_once_the_book_knows_the_model():
    from billing.costs import ModelPrice
    from billing.ledger.prepare import reprice

    raw = {"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z",
           "properties": {"model": "brand-new", "input_tokens": 1000, "output_tokens": 10}}
    got = fast(raw)
    assert got.unpriced and got.cost_pico == 0
    assert reprice(got, Pricer(BOOK)) == got  # still unknown: unchanged
    price = ModelPrice(model="brand-new", provider="p", effective_from="2026-10-01", input="2", output="8",
                       source="test", retrieved="2026-10-02")
    newer = BOOK.merged(CostBook([price]))
    priced = reprice(got, Pricer(newer))
    assert priced.unpriced is None and priced.cost_pico == 1000 * 2_000_000 + 10 * 8_000_000
    assert priced._replace(cost_pico=0, unpriced=got.unpriced) == got  # nothing else changes
    later = ModelPrice(**{**price.model_dump(), "effective_from": "2026-10-04"})
    assert reprice(got, Pricer(BOOK.merged(CostBook([later])))).unpriced  # not in force yet on the 3rd
    dear = ModelPrice(**{**price.model_dump(), "input": "10000000000"})  # $10,000 a token: over $1M
    assert "exceeds" in reprice(got, Pricer(BOOK.merged(CostBook([dear])))).unpriced


def test_the_window_and_size_limits_are_inclusive_where_documented():
    """2000-01-01T00:00:00Z is the first instant taken; properties of exactly 32 KiB pass."""
    first = {"id": "a", "customer": "acme", "type": "request", "timestamp": "2000-01-01T00:00:00Z"}
    assert isinstance(fast(first), Prepared) and reference(first)[0] == "accepted"
    note = "x" * (32 * 1024 - len('{"note":""}'))
    full = {**first, "timestamp": "2026-10-03T12:00:00Z", "properties": {"note": note}}
    assert isinstance(fast(full), Prepared) and reference(full)[0] == "accepted"
    assert fast({**full, "properties": {"note": note + "x"}}).code == ErrorCode.EVENT_TOO_LARGE
    assert batch([first, full]) == [fast(first), fast(full)]


def test_cost_is_exact_picodollars():
    raw = {"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z",
           "properties": {"model": "claude-sonnet-4-5", "input_tokens": 2100, "output_tokens": 400,
                          "cache_read_tokens": 1500}}
    got = fast(raw)
    assert isinstance(got, Prepared)
    # $3 / $15 / $0.30 per 1M tokens
    assert Decimal(got.cost_pico) / PICO == Decimal("0.0063") + Decimal("0.006") + Decimal("0.00045")
    assert got.cost_pico == event_cost(parse_event(raw), BOOK) * PICO


# ------------------------------------------------------------- the batch fast path

def batch(raws, now: datetime = NOW) -> list:
    return prepare_batch(raws, now_us=to_us(now), tolerance_us=int(TOLERANCE.total_seconds()) * 1_000_000,
                         known_types=KNOWN_TYPES, pricer=Pricer(BOOK), measured=MEASURED)


@pytest.mark.slow
@FAST
@given(st.lists(st.one_of(single_fault_events(), raw_events()), max_size=12))
def test_batch_fast_path_equals_prepare_event_by_event(raws):
    flagged: dict = {}
    got = prepare_batch(raws, now_us=to_us(NOW), tolerance_us=int(TOLERANCE.total_seconds()) * 1_000_000,
                        known_types=KNOWN_TYPES, pricer=Pricer(BOOK), measured=MEASURED, flagged=flagged)
    assert got == [fast(raw) for raw in raws]
    # the positions of the events kept unpriced or unmetered, and only those
    assert flagged == {i: p for i, p in enumerate(got) if isinstance(p, Prepared) and (p.unpriced or p.unmetered)}


@pytest.mark.slow
@FAST
@given(st.lists(single_fault_events(), min_size=1, max_size=12))
@example([{"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z",
           "properties": {"model": "claude-sonnet-4-5", "input_tokens": 2100, "output_tokens": 400,
                          "feature": "support-chat", "user": -3, "flag": True}}])
@example([{"id": "a", "customer": "acme", "type": "llm.call", "timestamp": stamp,
           "properties": {"model": "claude-sonnet-4-5", "input_tokens": 2100}}
          for stamp in ["2026-10-03T12:00:60Z", "2026-10-03T12:60:00Z", "2026-10-03T24:00:00Z",
                        "2026-10-03T12:5\u0669:00Z", "2026-10-03 12:00:00Z", "2026-10-03T12-00:00Z",
                        "2026-10-03T12:00:00Z", "2026-10-03T12:59:59Z", "2026-10-03T13:00:00Z"]])
@example([{"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-11-15T12:05:01Z",
           "properties": {"model": "claude-sonnet-4-5", "input_tokens": 2100}}])  # 1 s past the tolerance
@example([{"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z",
           "properties": {"model": "claude-sonnet-4-5", "input_tokens": 2 ** 70}}])
def test_batch_fast_path_agrees_on_well_formed_events(raws):
    assert batch(raws) == [fast(raw) for raw in raws]


class _Text(str):
    """A str subclass (an enum's value, say): the fast path must not treat it as plain text."""


@st.composite
def unstorable_events(draw) -> dict:
    """A well-formed event with text PostgreSQL cannot store or read back somewhere in it
    (a NUL character), or an agent task id too long for its column."""
    props: dict = {"model": draw(st.sampled_from(KNOWN_MODELS))}
    for key in draw(st.lists(st.sampled_from(TOKEN_KEYS), min_size=1, max_size=3, unique=True)):
        props[key] = draw(st.integers(0, 3_000_000))
    if draw(st.booleans()):
        props["feature"] = "support-chat"
    raw = {"id": draw(st.text(string.ascii_letters + string.digits, min_size=1, max_size=12)), "customer": "acme",
           "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z", "properties": props}
    bad = draw(st.sampled_from(["a\x00", "\x00", "caf\u00e9\x00"]))
    where = draw(st.sampled_from(["id", "customer", "model", "model_subclass", "value", "key", "nested", "task",
                                  "task_long", "task_subclass", "escaped"]))
    if where in ("id", "customer"):
        raw[where] = raw[where] + bad
    elif where == "model":
        props["model"] = props["model"] + bad
    elif where == "model_subclass":
        props["model"] = _Text(bad)
        for key in TOKEN_KEYS:
            props.pop(key, None)
    elif where == "value":
        props["user"] = bad
    elif where == "key":
        props["user" + bad] = 1
    elif where == "nested":
        props["meta"] = {"tags": ["ok", bad]}
    elif where == "task":
        props["task"] = bad
    elif where == "task_long":
        props["task"] = "t" * draw(st.integers(199, 202))
    elif where == "task_subclass":
        props["task"] = _Text("t" * 201)
    else:  # a backslash and "u0000": six characters, not a NUL (accepted)
        props["user"] = "\\u0000"
    return raw


@FAST
@given(st.lists(unstorable_events(), min_size=1, max_size=8))
def test_batch_fast_path_equals_prepare_on_unstorable_text(raws):
    got = batch(raws)
    assert got == [fast(raw) for raw in raws]
    for raw, p in zip(raws, got):
        props = raw["properties"]
        nul = any("\x00" in str(v) for v in (raw["id"], raw["customer"], *props, *props.values()))
        if nul or len(str(props.get("task", ""))) > 200:
            assert isinstance(p, Rejection) and p.code in (ErrorCode.EVENT_INVALID, ErrorCode.UNKNOWN_MODEL), raw


def test_batch_fast_path_takes_common_events_without_the_general_rules(monkeypatch):
    """The inline path really handles the common shape (else the equality above is vacuous)."""
    import billing.ledger.prepare as module

    calls = []
    monkeypatch.setattr(module, "prepare", lambda raw, **kw: calls.append(raw) or fast(raw))
    common = {"id": "a", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:07Z",
              "properties": {"model": "claude-sonnet-4-5", "input_tokens": 2100, "output_tokens": 400,
                             "feature": "support-chat"}}
    odd = {**common, "id": "b", "properties": {**common["properties"], "batch": True}}
    got = batch([common, odd])
    assert calls == [odd]
    assert isinstance(got[0], Prepared) and got[0].cost_pico == 2100 * 3_000_000 + 400 * 15_000_000
    assert got[0].ts == to_us(datetime(2026, 10, 3, 12, 0, 7, tzinfo=UTC))


def test_a_new_models_stream_looks_the_book_up_once(monkeypatch):
    """An unknown model's events are priced from the pricer's memory after the first (the
    book's lookup, with its did-you-mean hint, is the slow part)."""
    pricer = Pricer(BOOK)
    calls = []
    real = BOOK.price_for
    monkeypatch.setattr(BOOK, "price_for", lambda *a, **k: calls.append(a) or real(*a, **k))
    raws = [{"id": f"e{i}", "customer": "acme", "type": "llm.call", "timestamp": f"2026-10-03T12:00:{i:02d}Z",
             "properties": {"model": "brand-new", "input_tokens": 10 + i}} for i in range(50)]
    got = prepare_batch(raws, now_us=to_us(NOW), tolerance_us=0, known_types=KNOWN_TYPES, pricer=pricer)
    assert all(p.unpriced and "brand-new" in p.unpriced for p in got)
    assert len(calls) == 1
