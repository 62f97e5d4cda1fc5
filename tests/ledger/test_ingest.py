"""Ingestion (``Ledger.record``) on SQLite and PostgreSQL: accepted / duplicate / conflict /
rejected with a reason code, per event; a bad event never loses or double-counts a good
one; results only after the commit."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import event as sa_event

from billing.store import event_store
from tests.support.db import World, counter_rows, shipped_catalog, stored_events

CATALOG = shipped_catalog()
START = datetime(2026, 10, 1, tzinfo=UTC)
NOW = datetime(2026, 10, 20, 12, 0, tzinfo=UTC)
SUBSCRIBERS = {"acme": "support-chatbot", "beta": "team", "gamma": "copilot-premium", "delta": "support-resolutions"}


def ev(eid: str, customer: str = "acme", etype: str = "llm.call", ts: str = "2026-10-05T10:00:00Z",
       **props) -> dict:
    if etype == "llm.call" and not props:
        props = {"model": "claude-sonnet-4-5", "input_tokens": 2100, "output_tokens": 400, "feature": "support-chat"}
    return {"id": eid, "customer": customer, "type": etype, "timestamp": ts, "properties": props}


def setup_world(engine, prefix: str = "") -> World:
    world = World(engine, CATALOG, START)
    for cid, plan in SUBSCRIBERS.items():
        world.accounts.create_customer(prefix + cid, now=START)
        world.accounts.subscribe(prefix + cid, plan, at=START, seats=2)
    world.at(NOW)
    return world


@pytest.fixture
def world(engine):
    return setup_world(engine)


def statuses(result) -> list[tuple[str, str | None]]:
    return [(r.status, r.code) for r in result.results]


def test_accepted_then_duplicate_then_conflict(world):
    batch = [ev("e1"), ev("e2", ts="2026-10-06T00:00:00Z"), ev("e3", customer="gamma", etype="request",
                                                               model="claude-opus-4-1")]
    first = world.record(batch)
    assert statuses(first) == [("accepted", None)] * 3
    assert [r.index for r in first.results] == [0, 1, 2]
    assert [(r.id, r.customer) for r in first.results] == [("e1", "acme"), ("e2", "acme"), ("e3", "gamma")]
    events, counters = stored_events(world.engine), counter_rows(world.engine)
    assert len(events) == 3
    assert [cost > 0 for c, *_, cost, _ in events if c == "acme"] == [True, True]  # costed at ingestion

    again = world.record(batch)
    assert statuses(again) == [("duplicate", None)] * 3
    assert again.to_json()["duplicates"] == 3 and again.accepted == 0
    assert stored_events(world.engine) == events
    assert counter_rows(world.engine) == counters

    conflicting = [
        ev("e1", ts="2026-10-05T10:00:01Z"),  # other time
        {**ev("e2", ts="2026-10-06T00:00:00Z"), "properties": {"model": "claude-sonnet-4-5", "input_tokens": 1}},
        ev("e3", customer="gamma", etype="request", model="gpt-4o"),  # other property value
        ev("e3", customer="gamma", etype="agent.step"),  # other type
    ]
    result = world.record(conflicting)
    assert statuses(result) == [("conflict", "event_conflict")] * 4
    assert all(r.message for r in result.results)
    assert result.to_json()["conflicts"] == 4
    assert stored_events(world.engine) == events  # nothing changed
    assert counter_rows(world.engine) == counters


def test_same_instant_in_another_offset_is_a_duplicate(world):
    assert world.record([ev("e1", ts="2026-10-05T10:00:00Z")]).accepted == 1
    result = world.record([ev("e1", ts="2026-10-05T12:00:00+02:00")])
    assert statuses(result) == [("duplicate", None)]


def test_property_order_does_not_matter(world):
    a = ev("e1", model="claude-sonnet-4-5", input_tokens=10, feature="support-chat")
    b = ev("e1", feature="support-chat", input_tokens=10, model="claude-sonnet-4-5")
    assert statuses(world.record([a])) == [("accepted", None)]
    assert statuses(world.record([b])) == [("duplicate", None)]
    # the same inside one batch
    c = ev("e2", model="claude-sonnet-4-5", input_tokens=10, feature="support-chat")
    d = ev("e2", feature="support-chat", input_tokens=10, model="claude-sonnet-4-5")
    assert statuses(world.record([c, d])) == [("accepted", None), ("duplicate", None)]
    assert len(stored_events(world.engine)) == 2


def test_repeats_inside_one_batch(world):
    result = world.record([ev("e1"), ev("e1"), ev("e1", ts="2026-10-07T00:00:00Z"), ev("e2")])
    assert statuses(result) == [("accepted", None), ("duplicate", None), ("conflict", "event_conflict"),
                                ("accepted", None)]
    events = stored_events(world.engine)
    assert [(c, e, ts) for c, e, _, ts, *_ in events] == [
        ("acme", "e1", int(datetime(2026, 10, 5, 10, tzinfo=UTC).timestamp()) * 1_000_000),
        ("acme", "e2", int(datetime(2026, 10, 5, 10, tzinfo=UTC).timestamp()) * 1_000_000)]


def test_repeat_after_a_conflicting_copy_is_judged_by_what_is_stored(world):
    assert world.record([ev("e1")]).accepted == 1
    changed = ev("e1", ts="2026-10-07T00:00:00Z")
    result = world.record([changed, ev("e1"), changed])
    assert statuses(result) == [("conflict", "event_conflict"), ("duplicate", None), ("conflict", "event_conflict")]
    # repeats of an event that cannot be stored are rejected alike, whatever their content
    result = world.record([ev("x", customer="nobody"), ev("x", customer="nobody"),
                           ev("x", customer="nobody", ts="2026-10-07T00:00:00Z")])
    assert statuses(result) == [("rejected", "customer_not_found")] * 3
    assert [e for _, e, *_ in stored_events(world.engine)] == ["e1"]


def test_event_ids_are_per_customer(world):
    result = world.record([ev("same", customer="acme"), ev("same", customer="beta")])
    assert statuses(result) == [("accepted", None)] * 2
    assert len(stored_events(world.engine)) == 2


BAD_EVENTS = {
    "customer_not_found": ev("bad", customer="nobody"),
    "negative_quantity": ev("bad", model="gpt-4o", input_tokens=-5),
    "non_numeric_quantity": ev("bad", model="gpt-4o", output_tokens="five"),
    "bad_timestamp": ev("bad", ts="2026-10-05T10:00:00"),  # no timezone
    "timestamp_in_future": ev("bad", ts=(NOW + timedelta(hours=1)).isoformat()),
    "event_invalid": {"id": "bad", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-05T10:00:00Z",
                      "properties": {}, "unexpected": True},
}
MORE_BAD = [
    ("bad_timestamp", ev("bad", ts="last tuesday")),
    ("event_invalid", {"customer": "acme", "type": "request", "timestamp": "2026-10-05T10:00:00Z"}),  # no id
    ("event_invalid", ev("", etype="request")),
    ("event_invalid", {**ev("bad", etype="request"), "properties": ["not", "an", "object"]}),
    ("event_invalid", "not an object"),
    ("non_numeric_quantity", ev("bad", model="gpt-4o", input_tokens=True)),
    ("negative_quantity", ev("bad", model="gpt-4o", input_tokens="-1")),
    ("event_invalid", {**ev("bad", etype="request"), "properties": {"user": "\ud800"}}),  # not storable text
    ("event_invalid", ev("bad", etype="x" * 101)),  # a type longer than its column
    # numbers that would not fit the 64-bit columns (tokens, or the cost they add up to)
    ("quantity_too_large", ev("bad", model="gpt-4o", input_tokens=10**16)),
    ("quantity_too_large", ev("bad", model="claude-opus-4-1", output_tokens=10**12)),
]


@pytest.mark.parametrize("code, bad", [*BAD_EVENTS.items(), *MORE_BAD], ids=lambda v: v if isinstance(v, str) else "")
def test_rejected_with_reason_code_and_neighbours_kept(world, code, bad):
    batch = [ev("g1"), bad, ev("g2", customer="beta", model="gpt-4o", input_tokens=7, output_tokens=1), bad,
             ev("g3", customer="gamma", etype="request")]
    result = world.record(batch)
    assert statuses(result) == [("accepted", None), ("rejected", code), ("accepted", None), ("rejected", code),
                                ("accepted", None)]
    rejected = result.results[1]
    assert rejected.message
    assert result.to_json()["rejected"] == 2
    assert {e["index"] for e in result.to_json()["errors"]} == {1, 3}
    assert sorted((c, e) for c, e, *_ in stored_events(world.engine)) == [("acme", "g1"), ("beta", "g2"),
                                                                          ("gamma", "g3")]
    # the good ones were counted once each
    counters = counter_rows(world.engine)
    assert sum(n for (c, m, _), (_, _, n, _) in counters.items() if c == "acme" and m == "messages") == 1
    assert sum(n for (c, m, _), (_, _, n, _) in counters.items() if c == "gamma" and m != "*") == 1


def test_rejected_event_can_be_sent_again_once_fixed(world):
    result = world.record([ev("e1", model="gpt-4o", input_tokens=-5)])
    assert statuses(result) == [("rejected", "negative_quantity")]
    assert statuses(world.record([ev("e1", model="gpt-4o", input_tokens=5)])) == [("accepted", None)]


# ------------------------------------------------------------------ commit semantics

def test_no_results_and_nothing_stored_when_the_transaction_fails(world, monkeypatch):
    def boom(*_args, **_kwargs):
        raise RuntimeError("database went away mid-batch")

    monkeypatch.setattr(event_store, "upsert_counters", boom)
    with pytest.raises(RuntimeError, match="went away"):
        world.record([ev("e1"), ev("e2")])
    assert stored_events(world.engine) == []
    assert counter_rows(world.engine) == {}
    monkeypatch.undo()
    # the client retries: everything is accepted exactly once
    assert statuses(world.record([ev("e1"), ev("e2")])) == [("accepted", None)] * 2
    assert len(stored_events(world.engine)) == 2


def test_no_results_when_the_commit_itself_fails(world):
    def fail_commit(conn):
        raise RuntimeError("commit failed")

    sa_event.listen(world.engine, "commit", fail_commit)
    try:
        with pytest.raises(RuntimeError, match="commit failed"):
            world.record([ev("e1"), ev("e2", customer="beta", model="gpt-4o", input_tokens=3)])
    finally:
        sa_event.remove(world.engine, "commit", fail_commit)
    assert stored_events(world.engine) == []
    assert counter_rows(world.engine) == {}
    assert world.record([ev("e1")]).accepted == 1


def test_failed_chunk_is_safe_to_retry(world, monkeypatch):
    """Chunks commit one by one; when a later chunk fails the call raises, and sending the
    whole batch again gives duplicates for what was committed: nothing lost or doubled."""
    calls = {"n": 0}
    real = event_store.upsert_counters

    def fail_second(conn, deltas):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("second chunk failed")
        return real(conn, deltas)

    monkeypatch.setattr(event_store, "upsert_counters", fail_second)
    batch = [ev(f"e{i}", ts=f"2026-10-0{1 + i % 9}T10:00:00Z") for i in range(6)]
    with pytest.raises(RuntimeError):
        world.record(batch, chunk_size=3)
    assert [e for _, e, *_ in stored_events(world.engine)] == ["e0", "e1", "e2"]
    monkeypatch.undo()
    result = world.record(batch, chunk_size=3)
    assert [r.status for r in result.results] == ["duplicate"] * 3 + ["accepted"] * 3
    assert [r.index for r in result.results] == list(range(6))
    assert len(stored_events(world.engine)) == 6
    counters = counter_rows(world.engine)
    assert sum(n for (c, m, _), (_, _, n, _) in counters.items() if (c, m) == ("acme", "messages")) == 6


def test_chunks_share_idempotency(world):
    batch = [ev("e1"), ev("e2"), ev("e1"), ev("e3"), ev("e2", ts="2026-10-09T00:00:00Z")]
    result = world.record(batch, chunk_size=2)
    assert statuses(result) == [("accepted", None), ("accepted", None), ("duplicate", None), ("accepted", None),
                                ("conflict", "event_conflict")]


# ------------------------------------------------------- random mixed batches (hypothesis)

GOOD_TYPES = {"acme": ["llm.call"], "beta": ["llm.call"], "gamma": ["request"], "delta": ["outcome"]}


@st.composite
def good_event(draw, ids) -> dict:
    customer = draw(st.sampled_from(sorted(SUBSCRIBERS)))
    etype = GOOD_TYPES[customer][0]
    day = draw(st.integers(1, 19))
    ts = f"2026-10-{day:02d}T{draw(st.integers(0, 23)):02d}:00:00Z"
    if etype == "llm.call":
        props = {"model": draw(st.sampled_from(["claude-sonnet-4-5", "gpt-4o"])),
                 "input_tokens": draw(st.integers(0, 5000)), "output_tokens": draw(st.integers(0, 500))}
        if draw(st.booleans()):
            props["feature"] = "support-chat"
    elif etype == "request":
        props = {"model": draw(st.sampled_from(["gpt-4o", "claude-opus-4-1", "o3"]))}
    else:
        props = {"outcome": "resolution", "outcome_id": draw(st.text(string.ascii_lowercase, min_size=1, max_size=4))}
    return {"id": draw(ids), "customer": customer, "type": etype, "timestamp": ts, "properties": props}


BAD_CHOICES = [bad for bad in BAD_EVENTS.values()] + [bad for _, bad in MORE_BAD]


@st.composite
def mixed_batches(draw):
    # ("bad" is the id of every bad sample: a good event may not draw it)
    ids = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=3).filter(lambda s: s != "bad")
    goods = draw(st.lists(good_event(ids), min_size=1, max_size=25))
    batch = list(goods)
    for _ in range(draw(st.integers(0, 6))):  # bad events, exact replays and conflicting replays
        kind = draw(st.sampled_from(["bad", "replay", "conflict"]))
        pos = draw(st.integers(0, len(batch)))
        if kind == "bad":
            item = draw(st.sampled_from(BAD_CHOICES))
        elif kind == "replay":
            item = dict(draw(st.sampled_from(goods)))
        else:
            item = {**draw(st.sampled_from(goods)), "timestamp": "2026-10-19T23:59:59Z"}
        batch.insert(pos, item)
    chunk = draw(st.sampled_from([3, 7, 1000]))
    return batch, chunk


def expected_outcome(batch: list, prefix: str) -> tuple[list[str], dict[tuple[str, str], dict]]:
    """Statuses by the documented rules, and the events that end up stored."""
    stored: dict[tuple[str, str], dict] = {}
    out = []
    for raw in batch:
        if not isinstance(raw, dict) or raw.get("id") in (None, "", "bad"):  # every bad sample
            out.append("rejected")
            continue
        key = (raw["customer"], raw["id"])
        if key not in stored:
            stored[key] = raw
            out.append("accepted")
        elif stored[key] == raw:
            out.append("duplicate")
        else:
            out.append("conflict")
    return out, stored


_MIXED_COUNTER = {"n": 0}


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=mixed_batches())
def test_mixed_batches_lose_nothing_and_count_once(module_engine, data):
    batch, chunk = data
    _MIXED_COUNTER["n"] += 1
    prefix = f"m{_MIXED_COUNTER['n']}_"
    world = setup_world(module_engine, prefix)

    def scoped(raw):
        if isinstance(raw, dict) and raw.get("customer") in SUBSCRIBERS:
            return {**raw, "customer": prefix + raw["customer"]}
        return raw

    batch = [scoped(r) for r in batch]
    want, stored = expected_outcome(batch, prefix)
    result = world.record(batch, chunk_size=chunk)
    assert [r.status for r in result.results] == want
    assert [r.index for r in result.results] == list(range(len(batch)))
    rows = [r for r in stored_events(module_engine) if r[0].startswith(prefix)]
    assert sorted((c, e) for c, e, *_ in rows) == sorted(stored)
    # replaying the whole batch changes nothing and accepts nothing
    again = world.record(batch, chunk_size=chunk)
    assert again.accepted == 0
    assert [r for r in stored_events(module_engine) if r[0].startswith(prefix)] == rows
    # each stored event counted exactly once in its meters' counters
    counters = {k: v for k, v in counter_rows(module_engine).items() if k[0].startswith(prefix)}
    for customer, meter in ((prefix + "gamma", "premium_requests"), (prefix + "delta", "resolutions")):
        n = sum(1 for c, *_ in rows if c == customer)
        assert sum(v[2] for k, v in counters.items() if k[:2] == (customer, meter)) == n


@pytest.mark.parametrize("chunk", [700, 50_000])
def test_large_replays_are_told_from_new_events(world, chunk):
    """Batches past the small-batch path (COPY on PostgreSQL, where one stored event makes
    the chunk take the staging route): stored events are duplicates, a changed one a
    conflict, the rest accepted, and each new event counted once."""
    first = [ev(f"old{i}", ts=f"2026-10-05T10:{i // 60 % 60:02d}:{i % 60:02d}Z") for i in range(600)]
    assert world.record(first).accepted == 600
    changed = {**first[7], "timestamp": "2026-10-06T00:00:00Z"}
    fresh = [ev(f"new{i}", ts=f"2026-10-07T11:{i // 60 % 60:02d}:{i % 60:02d}Z") for i in range(900)]
    batch = [*fresh[:450], *first, changed, *fresh[450:], fresh[3]]
    result = world.record(batch, chunk_size=chunk)
    got = result.to_json()
    assert (got["accepted"], got["duplicates"], got["conflicts"], got["rejected"]) == (900, 601, 1, 0)
    assert [r.status for r in result.results[:450]] == ["accepted"] * 450
    assert result.results[450 + 600].status == "conflict"
    assert len(stored_events(world.engine)) == 1500
    counters = counter_rows(world.engine)
    assert sum(n for (c, m, _), (_, _, n, _) in counters.items() if (c, m) == ("acme", "messages")) == 1500


PAGES_PLAN = """
plan: pages
version: 1
name: Pages (tests)
effective_from: 2026-01-01T00:00:00Z
currency: USD
meters:
  - {key: pages, event_type: request, aggregation: sum, property: pages}
charges:
  - {key: pages, meter: pages, price: {model: per_unit, unit_price: "0.01"}}
"""


def test_a_property_a_plan_sums_must_be_a_number(engine):
    """Not a built-in quantity, but measured by a plan: a bad value is rejected with its
    reason (it used to fail the whole chunk when the counters read it)."""
    from billing.catalog import Catalog, parse_plan_text

    world = World(engine, Catalog([parse_plan_text(PAGES_PLAN, "pages.yaml")]), START)
    world.accounts.create_customer("acme", now=START)
    world.accounts.subscribe("acme", "pages", at=START)
    world.at(NOW)
    batch = [ev(f"p{i}", etype="request", pages=v) for i, v in enumerate([3, "abc", -4, "2.5", None, True, 5])]
    result = world.record(batch)
    assert statuses(result) == [("accepted", None), ("rejected", "non_numeric_quantity"),
                                ("rejected", "negative_quantity"), ("accepted", None),
                                ("rejected", "non_numeric_quantity"), ("rejected", "non_numeric_quantity"),
                                ("accepted", None)]
    ((_, (_, units, events, _)),) = [(k, v) for k, v in counter_rows(world.engine).items() if k[1] == "pages"]
    assert (units, events) == (10_500_000, 3)  # 3 + 2.5 + 5 pages


def test_many_rows_per_insert_statement_keep_every_outcome(world, monkeypatch):
    """SQLite inserts a chunk in statements of many rows each: repeats and replays that
    fall on either side of a statement boundary are told apart exactly as within one."""
    monkeypatch.setattr(event_store, "_SQLITE_ROWS_PER_INSERT", 7)
    stamp = lambda i: f"2026-10-05T11:{i // 60 % 60:02d}:{i % 60:02d}Z"  # noqa: E731
    first = [ev(f"s{i}", ts=stamp(i)) for i in range(1200)]
    assert world.record(first, chunk_size=2000).accepted == 1200
    changed = {**first[13], "timestamp": "2026-10-06T00:00:00Z"}
    fresh = [ev(f"t{i}", ts=stamp(i)) for i in range(1100)]
    # new events, stored ones, a changed one, then repeats of new ones inside the batch
    batch = [*fresh[:600], *first[:20], changed, *fresh[600:], fresh[5], {**fresh[6], "timestamp": stamp(9)}]
    got = world.record(batch, chunk_size=5000).to_json()
    assert (got["accepted"], got["duplicates"], got["conflicts"], got["rejected"]) == (1100, 21, 2, 0)
    assert len(stored_events(world.engine)) == 2300
    counters = counter_rows(world.engine)
    assert sum(n for (c, m, _), (_, _, n, _) in counters.items() if (c, m) == ("acme", "messages")) == 2300


def test_a_customer_created_after_a_rejection_is_accepted(world):
    """The ledger remembers the customers it has seen exist, never the ones it has not."""
    big = [ev(f"k{i}", ts=f"2026-10-05T12:{i // 60:02d}:{i % 60:02d}Z") for i in range(1500)]  # past the small path
    late = [{**e, "customer": "late"} for e in big[:1200]]
    result = world.record([*big, *late])
    assert (result.accepted, result.to_json()["rejected"]) == (1500, 1200)
    assert {r.code for r in result.results[1500:]} == {"customer_not_found"}
    world.accounts.create_customer("late", now=START)
    world.accounts.subscribe("late", "support-chatbot", at=START)
    again = world.record([*big, *late])
    assert (again.accepted, again.count("duplicate")) == (1200, 1500)


def test_text_the_database_cannot_store_is_rejected_and_neighbours_kept(world):
    """A NUL character (PostgreSQL refuses it in text) in an id, a customer or a model is
    that event's rejection, not a failed batch."""
    batch = [ev("ok1"), ev("n\x00ul"), {**ev("ok2"), "customer": "ac\x00me"},
             ev("m1", model="claude\x00", input_tokens=5), ev("m2", model="gpt\x00-4o"), ev("ok3"),
             ev("p1", user="bob\x00"), ev("p2", **{"us\x00er": 1}), ev("p3", meta={"tags": ["\x00"]}),
             ev("t1", task="t\x00"), ev("t2", task="t" * 201), ev("ok4", task="t" * 200, user="\\u0000")]
    for many in (False, True):  # the small-batch path and the bulk path
        padded = [*batch, *([ev(f"pad{i}", ts=f"2026-10-05T13:{i // 60:02d}:{i % 60:02d}Z") for i in range(1200)]
                            if many else [])]
        result = world.record(padded)
        ok = ("accepted" if not many else "duplicate", None)
        bad = ("rejected", "event_invalid")
        assert statuses(result)[:12] == [ok, bad, bad, bad, bad, ok, bad, bad, bad, bad, bad, ok]
    assert len(stored_events(world.engine)) == 1203
    # what was stored reads back in SQL on both databases (a close from the events aggregates in SQL)
    from billing.invoicing.service import Invoicing

    november = datetime(2026, 11, 1, tzinfo=UTC)
    closed = Invoicing(world.engine, CATALOG, clock=lambda: november, use_counters=False).close(november)
    assert len(closed.invoices) == len(SUBSCRIBERS) and closed.rated_from_counters == 0
