"""Batched writes of two-phase quota use (``billing.reservations.writer``): several
reservations, commits and releases in ONE transaction give each operation the outcome it
would get alone, a failing operation never fails its neighbours, and a batch never grants
more than the limit. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from billing.errors import BillingError, ErrorCode
from billing.ledger.accounts import Accounts
from billing.reservations.holds import Outbox, Quota
from billing.reservations.types import Op, parse_request
from billing.reservations.combiner import Combiner
from tests.support.quota import NOW, T0, Clock, catalog

CAT = catalog()


@pytest.fixture
def engine(any_engine):
    return any_engine


def quota(engine, *customers: str, plan: str = "blocky") -> Quota:
    acc = Accounts(engine, CAT)
    for c in customers:
        acc.create_customer(c, now=T0)
        acc.subscribe(c, plan, at=T0)
    return Quota(engine, CAT, clock=Clock())


def reserve_op(customer: str, quantity=1, *, key: str = "requests", request_id: str | None = None,
               task: str | None = None) -> Op:
    return Op("reserve", customer=customer, request=parse_request(customer, key, quantity, None, task, None, 0, None),
              ttl=60.0, request_id=request_id)


def run(q: Quota, *ops: Op) -> list[Op]:
    q.writer._run_batch(list(ops))  # one batch, as the combiner would hand it over
    return list(ops)


def test_one_batch_decides_in_order_and_never_over_grants(engine):
    q = quota(engine, "acme", "globex")
    ops = run(q, reserve_op("acme", 60), reserve_op("acme", 30), reserve_op("globex", 100), reserve_op("acme", 20),
              reserve_op("acme", 10))
    assert [o.result.granted for o in ops] == [True, True, True, False, True]
    assert ops[3].result.decision.reason == "quota_exhausted"
    assert q.usage("acme")["charges"][0]["held"] == "100"
    assert q.usage("globex")["charges"][0]["held"] == "100"


def test_request_ids_replay_inside_a_batch_and_across_batches(engine):
    q = quota(engine, "acme")
    a, b, c = run(q, reserve_op("acme", 5, request_id="r1"), reserve_op("acme", 5, request_id="r1"),
                  reserve_op("acme", 6, request_id="r1"))
    assert a.result.granted and b.result.id == a.result.id and b.result.replayed
    assert isinstance(c.error, BillingError) and c.error.code == ErrorCode.CONFLICT
    (d,) = run(q, reserve_op("acme", 5, request_id="r1"))
    assert d.result.id == a.result.id and d.result.replayed
    assert q.usage("acme")["charges"][0]["held"] == "5"


def test_mixed_batch_of_reserves_commits_and_releases(engine):
    q = quota(engine, "acme")
    first = q.reserve("acme", "requests", 10)
    second = q.reserve("acme", "requests", 20)
    ops = run(q, Op("commit", reservation_id=first.id, event={"type": "request", "properties": {}}),
              Op("release", reservation_id=second.id), reserve_op("acme", 71),
              Op("commit", reservation_id="rsv_missing"), Op("release", reservation_id=first.id),
              Op("commit", reservation_id=first.id, event={"type": "request", "properties": {}}))
    commit, release, reserve, missing, late_release, again = ops
    assert commit.result["event"] == "accepted" and release.result["status"] == "released"
    # the reservation saw the 10 + 20 units still held when the batch started: 30 + 71 > 100
    assert not reserve.result.granted and reserve.result.decision.reason == "quota_exhausted"
    assert missing.error.code == ErrorCode.RESERVATION_NOT_FOUND
    assert late_release.error.code == ErrorCode.INVALID_TRANSITION  # released before its commit settled
    # the same event twice in one batch: decided after the first is stored
    assert again.result["event"] == "duplicate"
    usage = q.usage("acme")["meters"]["requests"]
    assert (usage["used"], usage["held"], usage["events"]) == ("1", "0", 1)
    assert q.get(first.id).status == "committed" and q.get(second.id).status == "released"


def test_a_failing_operation_does_not_fail_its_neighbours(engine):
    q = quota(engine, "acme")
    with engine.begin() as conn:  # any hold of task 'boom' is refused by the database
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE quota_hold ADD CONSTRAINT no_boom CHECK (task IS DISTINCT FROM 'boom')"))
        else:
            conn.execute(text("CREATE TRIGGER no_boom BEFORE INSERT ON quota_hold WHEN NEW.task = 'boom' "
                              "BEGIN SELECT RAISE(ABORT, 'boom'); END"))
    ok1, bad, ok2 = run(q, reserve_op("acme", 1, key="steps", task="t1"), reserve_op("acme", 1, key="steps", task="boom"),
                        reserve_op("acme", 2))
    assert ok1.result.granted and ok2.result.granted
    assert bad.error is not None and bad.result is None
    assert q.usage("acme")["meters"]["requests"]["held"] == "2"
    assert q.usage("acme")["meters"]["steps"]["held"] == "1"


def test_commits_in_a_batch_count_once_and_fire_alerts(engine):
    q = quota(engine, "acme", plan="support-chatbot")  # 100 included; alerts at 50/80/100%
    holds = [q.reserve("acme", "messages") for _ in range(60)]
    ops = run(q, *[Op("commit", reservation_id=h.id, event={"properties": {"feature": "support-chat"}})
                   for h in holds])
    assert all(o.result["event"] == "accepted" for o in ops)
    alerts = [o.alert for o in ops if o.alert is not None]
    assert alerts and all(ctx.customer == "acme" for ctx, _usage in alerts)
    ctx, usage = alerts[0]
    q._record_alerts(ctx, usage, NOW)
    assert [r["dedupe_id"].split(":")[-1] for r in Outbox(engine).rows(type_="alert.triggered")] == ["50"]
    assert q.usage("acme")["meters"]["messages"]["used"] == "60"
    assert q.usage("acme")["meters"]["messages"]["held"] == "0"


def test_combiner_runs_each_op_once_and_hands_the_slot_over():
    seen: list[int] = []
    sizes: list[int] = []
    gate = threading.Event()

    def run_batch(batch):
        sizes.append(len(batch))
        if len(sizes) == 1:
            gate.wait(5)  # hold the first batch until the others are queued
        for op in batch:
            seen.append(op.request)
            op.result = op.request * 2

    combiner = Combiner(run_batch, leaders=1)

    def submit(i):
        while i and not sizes:  # the first op leads; the others queue behind it
            time.sleep(0.001)
        return combiner.submit(Op("reserve", request=i))

    with ThreadPoolExecutor(max_workers=20) as pool:
        futures = [pool.submit(submit, i) for i in range(20)]
        deadline = time.monotonic() + 10
        while len(combiner._queue) < 19 and time.monotonic() < deadline:
            time.sleep(0.001)
        gate.set()
        results = [f.result(10) for f in futures]
    assert results == [2 * i for i in range(20)]
    assert sorted(seen) == list(range(20))
    assert sizes == [1, 19]  # the finishing leader handed its slot to one caller, who led all the others


def test_combiner_gathers_under_load_and_never_makes_a_lone_caller_wait():
    sizes: list[int] = []

    def run_batch(batch):
        sizes.append(len(batch))
        for op in batch:
            op.result = op.request

    combiner = Combiner(run_batch, leaders=1, gather=5.0)
    started = time.monotonic()
    assert [combiner.submit(Op("reserve", request=i)) for i in range(3)] == [0, 1, 2]
    assert time.monotonic() - started < 1.0 and sizes == [1, 1, 1]  # alone: no waiting at all

    combiner._last = 4  # as after a batch of four: the next leader waits for three more
    results: list[int] = []

    def later(i):
        time.sleep(0.2)  # arrive while the leader is gathering
        results.append(combiner.submit(Op("reserve", request=i)))

    threads = [threading.Thread(target=later, args=(i,)) for i in (11, 12, 13)]
    for t in threads:
        t.start()
    started = time.monotonic()
    assert combiner.submit(Op("reserve", request=10)) == 10
    for t in threads:
        t.join(10)
    assert time.monotonic() - started < 4.0  # woken by the arrivals, not by the 5 s limit
    assert sizes[3:] == [4] and sorted(results) == [11, 12, 13]

    combiner._last, combiner._gather = 4, 0.05  # nobody else comes: the wait is bounded
    started = time.monotonic()
    assert combiner.submit(Op("reserve", request=20)) == 20
    assert 0.04 <= time.monotonic() - started < 1.0 and sizes[4:] == [1]

    combiner._last = 4
    time.sleep(0.6)  # a quiet spell (over 10 x gather) after a busy batch: no waiting
    started = time.monotonic()
    assert combiner.submit(Op("reserve", request=30)) == 30
    assert time.monotonic() - started < 0.04

    assert Combiner(run_batch, leaders=2, gather=5.0)._gather == 0.0  # a new caller would take the free slot


def test_concurrent_reserve_and_commit_keep_the_books(engine):
    q = quota(engine, "acme")

    def one(i: int) -> str:
        r = q.reserve("acme", "requests", 1, request_id=f"r{i}")
        if not r.granted:
            return "denied"
        if i % 3 == 0:
            q.release(r.id)
            return "released"
        q.commit(r.id, {"type": "request", "properties": {}})
        return "committed"

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(one, range(150)))
    usage = q.usage("acme")["meters"]["requests"]
    assert usage["held"] == "0"
    assert int(usage["used"]) == outcomes.count("committed") <= 100
    assert outcomes.count("committed") + outcomes.count("released") >= 100  # released units were granted again


def test_a_crash_after_reserve_leaks_nothing_and_after_commit_loses_nothing(engine):
    """A process that reserved, committed and died at once (no release, no cleanup): the
    committed event is there, the forgotten hold frees itself when it expires."""
    import subprocess
    import sys
    from datetime import timedelta
    from pathlib import Path

    q = quota(engine, "acme")
    root = Path(__file__).resolve().parents[2]
    url = engine.url.render_as_string(hide_password=False)
    code = f"""
import os, sys
sys.path[:0] = [{str(root)!r}]
from billing.store.db import make_engine
from billing.reservations.holds import Quota
from tests.support.quota import Clock, catalog
q = Quota(make_engine({url!r}), catalog(), clock=Clock())
held = q.reserve("acme", "requests", 60, ttl=30)
done = q.reserve("acme", "requests", 10, ttl=30)
q.commit(done.id, {{"type": "request", "properties": {{}}}})
print(held.id, done.id, flush=True)
os._exit(0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    held_id, done_id = out.stdout.split()
    assert (q.get(held_id).status, q.get(done_id).status) == ("held", "committed")
    assert q.usage("acme")["meters"]["requests"]["used"] == "1"  # the committed event survived
    assert q.check("acme", "requests", 40).outcome == "deny"  # 60 still held + 1 used of 100
    q.clock.now = NOW + timedelta(seconds=31)
    assert q.check("acme", "requests", 99).outcome == "allow"  # the hold expired by itself
