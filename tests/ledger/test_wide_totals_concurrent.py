"""Totals past 2^63 under production conditions, on SQLite and PostgreSQL: writers racing
on one counter (ingestion one by one, in batches, quota commits, at once), the same
events again after a lost answer, and a writer killed (SIGKILL) while it carries the
counter past 2^63. Every counter stays an exact integer equal to the recount."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from billing.reservations.holds import Quota
from billing.ledger.recount import recount_all
from tests.support.db import World, counter_rows, task_usage_rows
from tests.support.wide_totals import CATALOG, INGEST_AT, MAX_COST, MAX_TOKENS, NOV_US, OCT, OCT_US, PLAN, big_event

E18 = 10**18
ROOT = Path(__file__).resolve().parents[2]


def _world(eng) -> World:
    w = World(eng, CATALOG, INGEST_AT)
    w.accounts.create_customer("big", now=OCT)
    w.accounts.subscribe("big", "big-usage", at=OCT)
    return w


def _recounted(eng) -> dict:
    with eng.begin() as conn:
        recount_all(conn, CATALOG)
    return counter_rows(eng)


def test_racing_writers_carry_one_counter_past_2_63_exactly(engine):
    world = _world(engine)
    quota = Quota(engine, CATALOG, clock=lambda: INGEST_AT, alerts=False)
    n = 8
    ids = {door: [{**big_event(i), "id": f"{door}{i}"} for i in range(n)] for door in "abq"}
    start, errors = threading.Barrier(3), []

    def one_by_one():
        for e in ids["a"]:
            assert world.record([e]).accepted == 1

    def batches():
        for part in (ids["b"][:n // 2], ids["b"][n // 2:]):
            assert world.record(part).accepted == len(part)

    def commits():
        for e in ids["q"]:
            hold = quota.reserve("big", "tokens", MAX_TOKENS, cost=MAX_COST, task="t1")
            event = {k: v for k, v in e.items() if k != "customer"}
            assert quota.commit(hold.id, event)["event"] == "accepted"

    def run(job):
        try:
            start.wait()
            job()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in (one_by_one, batches, commits)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    quota.close()
    assert errors == []
    total = 3 * n
    counters = counter_rows(engine)
    assert counters[("big", "tokens", OCT_US)] == (NOV_US, total * E18, total, total * E18)
    assert counters[("big", "*", OCT_US)] == (NOV_US, 0, total, total * E18)
    # every door counts the task its event names (one rule): 3 x n steps of t1
    assert task_usage_rows(engine)[("big", "t1")] == (total, 3 * (n * 2 * MAX_TOKENS - sum(range(n))), total * E18)

    # every event again (a lost answer, retried): duplicates, nothing counted twice
    again = world.record([e for door in "abq" for e in ids[door]])
    assert again.count("duplicate") == total
    assert counter_rows(engine) == counters == _recounted(engine)


_WRITER = """
import sys
from datetime import UTC, datetime
from billing.catalog import Catalog, parse_plan_text
from billing.store.db import make_engine
from billing.ledger.ingest import Ledger

url, plan = sys.argv[1], open(sys.argv[2]).read()
ledger = Ledger(make_engine(url), Catalog([parse_plan_text(plan, "big-usage.yaml")]),
                clock=lambda: datetime(2026, 10, 20, tzinfo=UTC))
for i in range(100_000):
    event = {"id": f"k{i}", "customer": "big", "type": "llm.call", "timestamp": "2026-10-05T12:00:00Z",
             "properties": {"input_tokens": 10**12, "output_tokens": 10**12, "cost": "1000000"}}
    assert ledger.record([event]).accepted == 1
    print(i, flush=True)
"""


@pytest.mark.slow
def test_a_writer_killed_while_carrying_leaves_exact_counters(engine, db_url, tmp_path):
    _world(engine)
    plan = tmp_path / "big-usage.yaml"
    plan.write_text(PLAN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, db_url, str(plan)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:  # one line per committed event
            if int(line) >= 14:  # past 2^63 (ten events), well into the carry
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    counters = counter_rows(engine)  # every part an integer, each low part under 10^18
    events = counters[("big", "*", OCT_US)][2]
    assert events >= 15
    assert counters[("big", "tokens", OCT_US)] == (NOV_US, events * E18, events, events * E18)
    assert counters == _recounted(engine)
