"""Quota commits keep the hourly rollups as ingestion does (``billing.reservations.commit_rollups``),
on SQLite and PostgreSQL.

For a random mix of ingested chunks and batches of commits (one batch of the quota writer
each, as its combiner hands them over) -- events of a few hours and dimension values (text,
integers, booleans, floats, missing) and integer properties the rollups sum; commits that
retry a committed hold, commit one hold twice in a batch, reuse an event id taken by an
ingested event or another commit of the batch (same content: duplicate; other content:
conflict), commit after their hold expired (late) or date their event hours back -- the
rollups equal the ones ``billing db recount`` rebuilds from the stored events, and count
every stored event once.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.ledger.accounts import Accounts
from billing.ledger.recount import lock_for_recount, rebuild_rollups
from billing.ledger.rollups import DEFAULT_DIMENSIONS
from billing.reservations.holds import Quota
from billing.reservations.types import Op
from billing.store import rollup_sql
from tests.support.db import reset_database, rollup_rows, shipped_catalog
from tests.support.ledger import assert_derived_equal_recount

CATALOG = shipped_catalog()
OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOW = datetime(2026, 10, 20, 12, 30, tzinfo=UTC)
HOURS = [NOW - timedelta(hours=h) for h in (0, 1, 30)] + [OCT + timedelta(hours=5)]
VALUES = st.one_of(st.sampled_from(["chat", "search"]), st.integers(-2, 2), st.booleans(), st.just(1.5), st.none())


class _Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@st.composite
def events(draw, ids) -> dict:
    """An event of acme or beta (its id from ``ids``: shared with other steps on purpose)."""
    props: dict = {"model": draw(st.sampled_from(["claude-sonnet-4-5", "gpt-5-mini"]))}
    if draw(st.integers(0, 3)):
        props["input_tokens"] = draw(st.integers(0, 3000))
        props["output_tokens"] = draw(st.integers(0, 500))
    else:
        props["cost"] = "0.002"
    for name in ("feature", "user", "task", "score"):
        if (value := draw(VALUES)) is not None:
            props[name] = value
    ts = draw(st.sampled_from(HOURS)) + timedelta(minutes=draw(st.integers(-29, 29)))
    return {"id": draw(ids), "customer": draw(st.sampled_from(["acme", "beta"])), "type": "llm.call",
            "timestamp": min(ts, NOW).isoformat().replace("+00:00", "Z"), "properties": props}


@st.composite
def steps(draw) -> list[tuple]:
    ids = st.sampled_from([f"e{i}" for i in range(12)])
    out = []
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.booleans()):
            out.append(("ingest", draw(st.lists(events(ids), min_size=1, max_size=6))))
            continue
        commits = []
        for _ in range(draw(st.integers(1, 8))):
            # a fresh hold, or again one committed before / earlier in this batch (by index)
            again = draw(st.one_of(st.none(), st.integers(0, 20)))
            event = draw(events(ids))
            if draw(st.integers(0, 3)) == 0:
                del event["id"]  # the reservation id
            if draw(st.integers(0, 3)) == 0:
                del event["timestamp"]  # now
            commits.append((again, event))
        # late: the batch runs after its new holds expired
        out.append(("commit", commits, draw(st.booleans())))
    return out


def _run(engine, quota: Quota, clock: _Clock, plan: list[tuple]) -> dict[str, int]:
    """The steps; returns how often each commit outcome was seen."""
    seen: dict[str, int] = {}
    held: list[tuple[str, str]] = []  # (hold id, customer) of every hold so far
    for step in plan:
        if step[0] == "ingest":
            quota.ledger.record(step[1])
            continue
        _, commits, late = step
        ops = []
        for again, event in commits:
            if again is not None and held:
                hold_id, customer = held[again % len(held)]
                event = {**event, "customer": customer}
            else:
                hold = quota.reserve(event["customer"], "llm_calls", ttl=5)
                assert hold.granted, hold.decision
                hold_id = hold.id
                held.append((hold_id, event["customer"]))
            ops.append(Op("commit", reservation_id=hold_id, event=event))
        if late:
            clock.now += timedelta(seconds=10)
        quota.writer._run_batch(ops)  # one batch, as the combiner would hand it over
        for op in ops:
            outcome = op.error.code.value if op.error is not None else op.result["event"]
            if op.result is not None and op.result.get("late_commit"):
                outcome += " late"
            seen[outcome] = seen.get(outcome, 0) + 1
        clock.now = NOW
    return seen


def _check(engine, plan: list[tuple], dims: tuple[str, ...]) -> dict[str, int]:
    """Run ``plan`` on an empty database; the rollups kept must count every stored event once
    and equal the rebuilt ones. Returns the commits' outcomes."""
    with engine.begin() as conn:
        rollup_sql.set_dimensions(conn, dims)
    accounts = Accounts(engine, CATALOG)
    for customer in ("acme", "beta"):
        accounts.create_customer(customer, now=OCT - timedelta(days=2))
        accounts.subscribe(customer, "token-api", at=OCT - timedelta(days=1))
    clock = _Clock()
    quota = Quota(engine, CATALOG, clock=clock, alerts=False)
    try:
        seen = _run(engine, quota, clock, plan)
    finally:
        quota.close()
    kept = rollup_rows(engine)
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT COUNT(*) FROM usage_event").scalar_one()
    assert sum(v[0] for v in kept.values()) == stored
    with engine.begin() as conn:
        lock_for_recount(conn)
        rebuild_rollups(conn)
        rollup_sql.set_dimensions(conn, DEFAULT_DIMENSIONS)  # (a module's database keeps the migration's)
    assert kept == rollup_rows(engine)
    return seen


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(plan=steps(), dims=st.sampled_from([DEFAULT_DIMENSIONS, ("feature", "task", "user")]))
def test_commits_and_ingestion_keep_the_rollups_a_recount_rebuilds(module_db_url, module_engine, plan, dims):
    reset_database(module_db_url)
    _check(module_engine, plan, dims)


def _event(event_id: str, score: int | None = None, **props) -> dict:
    props = {"model": "gpt-5-mini", "input_tokens": 100, "output_tokens": 5, "feature": "chat", **props}
    if score is not None:
        props["score"] = score
    return {"id": event_id, "customer": "acme", "type": "llm.call", "timestamp": "2026-10-20T11:10:00Z",
            "properties": props}


def test_every_kind_of_commit_keeps_therollup_rows(engine):
    """The kinds of commit the property mixes, each once: new events of one key in one batch
    (their integer sums merged), a reused id of an ingested event (same content: duplicate;
    other: conflict), a hold and an event id twice in one batch, a late commit, a retry of
    a committed hold, and an ingested copy of a committed event."""
    late = {k: v for k, v in _event("e4").items() if k != "timestamp"}
    plan = [("ingest", [_event("e0", 1)]),
            ("commit", [(None, _event("e0", 1)), (None, _event("e0", 9)), (None, _event("e1", 3)),
                        (None, _event("e2", 2)), (2, _event("e1", 3)), (None, _event("e3", user="u1")),
                        (None, _event("e3", user="u1"))], False),
            ("commit", [(None, late)], True),
            ("commit", [(2, _event("e1", 3))], False),
            ("ingest", [_event("e1", 3), _event("e5", 4)])]
    seen = _check(engine, plan, ("feature", "task", "user"))
    assert seen == {"accepted": 3, "duplicate": 4, "event_conflict": 1, "accepted late": 1}
    rows = {(k[1], k[4]): v for k, v in rollup_rows(engine).items()}
    hour = int(datetime(2026, 10, 20, 11, tzinfo=UTC).timestamp()) * 1_000_000
    assert rows[(hour, '{"feature":"chat"}')][0] == 4  # e0, e1, e2, e5
    assert rows[(hour, '{"feature":"chat"}')][7] == {"score": 1 + 3 + 2 + 4}


def test_concurrent_commits_and_chunks_keep_the_rollups(engine):
    """Callers committing at once (the combiner's batches) while chunks of events with some of
    the same ids and the same rollup rows are ingested: no error, each event stored once, the
    rollups (and counters, task usage) equal a recount."""
    accounts = Accounts(engine, CATALOG)
    for customer in ("acme", "beta"):
        accounts.create_customer(customer, now=OCT - timedelta(days=2))
        accounts.subscribe(customer, "token-api", at=OCT - timedelta(days=1))
    quota = Quota(engine, CATALOG, clock=lambda: NOW, alerts=False)
    customers = ("acme", "beta")

    def shared(i: int) -> dict:  # the event of commit i (its hold's task filled in)
        return {**_event(f"c{i}", i % 4 or None, user=f"u{i % 3}", task=f"t{i % 3}"), "customer": customers[i % 2]}

    def commit(i: int) -> str:
        hold = quota.reserve(customers[i % 2], "llm_calls", task=f"t{i % 3}")
        assert hold.granted, hold.decision
        return quota.commit(hold.id, shared(i))["event"]

    def ingest() -> None:
        for r in range(6):  # the even ids, last first, are committed too: whichever is first stores it
            quota.ledger.record([shared(i) for i in range(58 - r * 10, 48 - r * 10, -2)] + [_event(f"i{r}")])

    try:
        feeder = threading.Thread(target=ingest)
        feeder.start()
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(commit, range(60)))
        feeder.join(120)
    finally:
        quota.close()
    assert set(outcomes) <= {"accepted", "duplicate"} and outcomes.count("accepted") >= 30  # the odd ids
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM usage_event").scalar_one() == 60 + 6
    assert sum(v[0] for v in rollup_rows(engine).values()) == 66
    assert_derived_equal_recount(engine)
