"""A hypothesis state machine over the ledger and invoicing together (SQLite and PostgreSQL).

One customer on a small plan (``seats-requests``: $10 per seat in arrears + $1 per
``request``, no included units, calendar months in UTC). Rules: ingest new events (random
times across ~3 months), replay duplicates, send conflicting replays, send late events for
closed periods, change seats, pay an invoice, and close at advancing instants.

Invariants after every step:

(a) every accepted event is billed exactly once: for each closed period, what all finalized
    documents bill for it (invoice lines, adjustment lines, credit notes) per charge equals
    what the pure engine (``rate_period`` on the pure ``aggregate`` of the model's own record
    of accepted events) gives for that period, counting the events that had arrived by the
    last close that produced an invoice (later ones are pending: they wait for the next
    invoice, never lost and never billed twice);
(b) finalized documents never change (only paid moves their status);
(c) usage counters equal the sum of their events (the ``*`` row: every event of the period);
(d) duplicates and conflicts never change stored data.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test)

from billing.events import parse_event
from billing.store.types import to_us
from billing.money import minor_units
from billing.rating.engine import RatingInput, rate_period
from billing.rating.meters import aggregate
from billing.rating.periods import BillingCycle
from tests.support.db import World, counter_rows, documents, invoicing_catalog, reset_database, stored_events

CATALOG = invoicing_catalog()
PLAN = CATALOG.get("seats-requests", 1)
START = datetime(2026, 9, 1, tzinfo=UTC)
END = datetime(2026, 12, 5, tzinfo=UTC)  # the clock never goes past this (~3 months)
CYCLE = BillingCycle("month", "calendar", "UTC")
CUSTOMER = "c"


def _minor(amount: Decimal) -> int:
    return int(amount.scaleb(minor_units(PLAN.currency)))


class BillingMachine(RuleBasedStateMachine):
    url: str = ""
    engine = None

    def __init__(self):
        super().__init__()
        reset_database(self.url)
        self.world = World(self.engine, CATALOG, START)
        self.world.accounts.create_customer(CUSTOMER, now=START)
        self.world.accounts.subscribe(CUSTOMER, PLAN.plan, at=START, seats=1)
        self.world.at(START + timedelta(hours=1))
        self.accepted: dict[str, dict] = {}  # event id -> the raw event (the model's record)
        self.arrived: dict[str, int] = {}  # event id -> arrival step
        self.step = 0
        self.settled_step = -1  # arrival steps up to this one are billed (last invoice-producing close)
        self.seats: list[tuple[datetime, int]] = [(START, 1)]
        self.closed: list = []  # closed periods, in order
        self.final_docs: dict[int, tuple] = {}  # finalized documents as first seen (without status)
        self.next_id = 0

    # ------------------------------------------------------------------ helpers
    def _new_id(self) -> str:
        self.next_id += 1
        return f"r{self.next_id}"

    def _event(self, ts: datetime, eid: str | None = None, **props) -> dict:
        return {"id": eid or self._new_id(), "customer": CUSTOMER, "type": "request",
                "timestamp": ts.isoformat().replace("+00:00", "Z"), "properties": props}

    def _record(self, events: list[dict]):
        self.step += 1
        return self.world.record(events)

    def _time(self, lo: datetime, hi: datetime, fraction: int) -> datetime:
        span = int((hi - lo).total_seconds())
        return lo + timedelta(seconds=span * fraction // 1000)

    # -------------------------------------------------------------------- rules
    @initialize(days=st.integers(0, 45), fractions=st.lists(st.integers(0, 1000), max_size=5),
                then_close=st.booleans())
    def begin(self, days, fractions, then_close):
        """Start somewhere in the first six weeks, with some usage, maybe already closed once."""
        self.world.at(self.world.now + timedelta(days=days))
        if fractions:
            self.ingest(fractions, False, False, {})
        if then_close:
            self.close()

    @rule(hours=st.sampled_from([1, 7, 30, 24 * 3, 24 * 9, 24 * 16]), then_close=st.booleans())
    def advance(self, hours, then_close):
        self.world.at(min(END, self.world.now + timedelta(hours=hours)))
        if then_close:
            self.close()

    @rule(fractions=st.lists(st.integers(0, 1000), min_size=1, max_size=6), repeat=st.booleans(),
          future=st.booleans(), props=st.sampled_from([{}, {"model": "gpt-4o"}, {"user": "u1", "n": 2}]))
    def ingest(self, fractions, repeat, future, props):
        batch = [self._event(self._time(START, self.world.now, f), **props) for f in fractions]
        expected = ["accepted"] * len(batch)
        if repeat:  # the same event twice in one batch: counted once
            batch.append(dict(batch[0]))
            expected.append("duplicate")
        if future:
            batch.append(self._event(self.world.now + timedelta(hours=1)))
            expected.append("rejected")
        result = self._record(batch)
        assert [r.status for r in result.results] == expected
        if future:
            assert result.results[-1].code == "timestamp_in_future"
        for raw, status in zip(batch, expected):
            if status == "accepted":
                self.accepted[raw["id"]] = raw
                self.arrived[raw["id"]] = self.step

    @precondition(lambda self: self.closed)
    @rule(pick=st.integers(0, 10_000), fraction=st.integers(0, 999), n=st.integers(1, 3))
    def late(self, pick, fraction, n):
        period = self.closed[pick % len(self.closed)]
        batch = [self._event(self._time(period.start, period.end, fraction)) for _ in range(n)]
        result = self._record(batch)
        assert [r.status for r in result.results] == ["accepted"] * n
        for raw in batch:
            self.accepted[raw["id"]] = raw
            self.arrived[raw["id"]] = self.step

    @precondition(lambda self: self.accepted)
    @rule(pick=st.integers(0, 10_000), offset=st.booleans())
    def replay(self, pick, offset):
        raw = dict(self.accepted[sorted(self.accepted)[pick % len(self.accepted)]])
        if offset:  # the same instant written in another offset is the same content
            ts = datetime.fromisoformat(raw["timestamp"].replace("Z", "+00:00"))
            raw["timestamp"] = ts.astimezone(timezone(timedelta(hours=-5))).isoformat()
        before = stored_events(self.engine), counter_rows(self.engine)
        result = self._record([raw])
        assert [(r.status, r.code) for r in result.results] == [("duplicate", None)]
        assert (stored_events(self.engine), counter_rows(self.engine)) == before

    @precondition(lambda self: self.accepted)
    @rule(pick=st.integers(0, 10_000), how=st.sampled_from(["time", "props", "type"]))
    def conflict(self, pick, how):
        raw = dict(self.accepted[sorted(self.accepted)[pick % len(self.accepted)]])
        if how == "time":
            ts = datetime.fromisoformat(raw["timestamp"].replace("Z", "+00:00")) - timedelta(seconds=1)
            raw["timestamp"] = ts.isoformat()
        elif how == "props":
            raw["properties"] = {**raw["properties"], "extra": "x"}
        else:
            raw["type"] = "agent.step"
        before = stored_events(self.engine), counter_rows(self.engine)
        result = self._record([raw])
        assert [(r.status, r.code) for r in result.results] == [("conflict", "event_conflict")]
        assert (stored_events(self.engine), counter_rows(self.engine)) == before

    @rule(seats=st.integers(0, 6))
    def change_seats(self, seats):
        self.world.accounts.change_seats(CUSTOMER, seats, at=self.world.now)
        self.seats.append((self.world.now, seats))

    @rule()
    def close(self):
        result = self.world.invoicing.close(self.world.now)
        assert result.credit_notes == []  # requests only add; seats of closed periods never change
        if result.invoices:
            self.settled_step = self.step
        period = CYCLE.period_containing(START)
        self.closed = []
        while period.end <= self.world.now:
            self.closed.append(period)
            period = CYCLE.next_period(period)
        again = self.world.invoicing.close(self.world.now)  # re-running is idempotent
        assert (again.invoices, again.credit_notes) == ([], [])

    @precondition(lambda self: self.final_docs)
    @rule(pick=st.integers(0, 10_000))
    def pay(self, pick):
        ids = sorted(self.final_docs)
        self.world.invoicing.mark_paid(ids[pick % len(ids)], self.world.now)

    # --------------------------------------------------------------- invariants
    @invariant()
    def finalized_documents_never_change(self):
        docs = documents(self.engine)
        for doc in docs:
            assert doc[3] in ("finalized", "paid"), doc
            assert doc[8] == sum(line[5] for line in doc[10])  # total = sum of its lines
            frozen = doc[:3] + doc[4:]
            if doc[0] in self.final_docs:
                assert frozen == self.final_docs[doc[0]], "a finalized document changed"
            else:
                self.final_docs[doc[0]] = frozen
        numbers = [doc[1] for doc in docs]
        assert numbers == [f"INV-{n:06d}" for n in range(1, len(docs) + 1)]
        # one regular invoice per closed period
        assert sorted(doc[6] for doc in docs) == [p.start for p in self.closed]

    @invariant()
    def every_accepted_event_is_billed_exactly_once(self):
        docs = documents(self.engine)
        billed: dict[tuple[datetime, str], int] = {}
        for doc in docs:
            for _, _, key, _, _, amount, start, _end in doc[10]:
                billed[(start, key)] = billed.get((start, key), 0) + amount
        events = [parse_event(raw) for raw in self.accepted.values()]
        settled = [e for e in events if self.arrived[e.id] <= self.settled_step]
        for period in self.closed:
            want = self._rate(period, settled)
            got = {key: billed.get((period.start, key), 0) for key in ("seat", "requests")}
            assert got == want, f"period {period.start:%Y-%m}: billed {got}, expected {want}"
            # pending (arrived after the last invoice) is never negative: nothing billed twice
            full = self._rate(period, events)
            assert all(full[k] >= got[k] for k in got)

    def _rate(self, period, events) -> dict[str, int]:
        usage = aggregate(PLAN, events, period.start, period.end)
        rated = rate_period(RatingInput(PLAN, CUSTOMER, period, usage, self.seats))
        out = {"seat": 0, "requests": 0}
        for line in rated.lines:
            out[line.key] += _minor(line.amount)
        return out

    @invariant()
    def counters_equal_their_events(self):
        want: dict[int, int] = {}
        for raw in self.accepted.values():
            ts = parse_event(raw).timestamp
            start = to_us(CYCLE.period_containing(ts).start)
            want[start] = want.get(start, 0) + 1
        rows = counter_rows(self.engine)
        got = {start: (units, n, cost) for (c, meter, start), (_, units, n, cost) in rows.items()
               if (c, meter) == (CUSTOMER, "requests")}
        assert got == {start: (n * 1_000_000, n, 0) for start, n in want.items()}
        every = {start: (units, n, cost) for (c, meter, start), (_, units, n, cost) in rows.items()
                 if (c, meter) == (CUSTOMER, "*")}  # every event of the period (requests are all there is)
        assert every == {start: (0, n, 0) for start, n in want.items()}

    @invariant()
    def stored_events_are_the_accepted_ones(self):
        rows = stored_events(self.engine, CUSTOMER)
        assert {e: ts for _, e, _, ts, *_ in rows} == {
            e: to_us(parse_event(raw).timestamp) for e, raw in self.accepted.items()}


def _run(url, engine, examples: int, steps: int) -> None:
    machine = type("Machine", (BillingMachine,), {"url": url, "engine": engine})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))


@pytest.mark.slow
def test_ledger_and_invoicing_state_machine(module_db_url, module_engine):
    if module_engine.dialect.name == "postgresql":
        _run(module_db_url, module_engine, examples=10, steps=25)
    else:
        _run(module_db_url, module_engine, examples=30, steps=30)
