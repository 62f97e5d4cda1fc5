"""``billing ingest-worker`` as processes: the command drains a stream and stops cleanly on
SIGTERM; two workers share the stream, one is killed with SIGKILL in the middle of a batch,
and the ledger the other one finishes is equal to a direct import of the same events
(200,000 events on PostgreSQL; a smaller run on SQLite, whose single writer the two
workers take turns at)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from billing.ingest_log.publisher import EventLogPublisher
from billing.ledger.ingest import BatchResult, Ledger
from tests.support.db import (counter_rows, engine_for_url, fresh_database, sqlite_database, stored_events,
                              task_usage_rows)
from tests.support.event_log import consumer_state
from tests.support.ledger import CATALOG, _cli_env, _event, _setup

CUSTOMERS = tuple(f"c{i:02d}" for i in range(40))


def _events(n: int) -> list[dict]:
    events = [_event(CUSTOMERS[i % len(CUSTOMERS)], f"e{i}", i, task=f"t{i % 11}") for i in range(n)]
    events[n // 2] = {"id": "bad", "customer": "c00", "type": "llm.call"}  # rejected by the ledger
    return events


def _publish(url: str, stream: str, events: list[dict]) -> None:
    publisher = EventLogPublisher(url, stream)
    try:
        assert publisher.publish(events).events == len(events)
    finally:
        publisher.close()


def _worker(db: str, url: str, stream: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "billing", "ingest-worker", "--nats", url, "--stream", stream,
                             "--json", *args], env=_cli_env(db), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _state(engine) -> tuple:
    return sorted(e[:7] for e in stored_events(engine)), counter_rows(engine), task_usage_rows(engine)


def _count(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT COUNT(*) FROM usage_event").scalar_one()


@pytest.mark.slow
def test_the_command_drains_the_stream_and_stops_on_sigterm(nats_stream, tmp_path):
    url, stream = nats_stream
    events = _events(3000)
    _publish(url, stream, events)
    with sqlite_database(tmp_path) as db, engine_for_url(db) as engine:
        _setup(engine, CUSTOMERS)
        proc = _worker(db, url, stream, "--batch", "2")
        deadline = time.monotonic() + 60
        while _count(engine) < 2999 and time.monotonic() < deadline:
            time.sleep(0.1)
        while consumer_state(url, stream) != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        totals = json.loads(out)
        assert (totals["events"], totals["accepted"], totals["rejected"], totals["messages"]) == (3000, 2999, 1, 3)
        assert "event bad of customer c00 rejected: bad_timestamp" in err  # the rejection is in the worker's log
        assert _count(engine) == 2999


def _kill_one_of_two(backend: str, n: int, url: str, stream: str, tmp_path) -> None:
    events = _events(n)
    _publish(url, stream, events)
    (tmp_path / "direct").mkdir()
    with fresh_database(backend, tmp_path / "direct") as direct_db, engine_for_url(direct_db) as direct:
        _setup(direct, CUSTOMERS)
        Ledger(direct, CATALOG, alerts=False).record(events, result=BatchResult(keep_events=False))
        expected = _state(direct)
    with fresh_database(backend, tmp_path) as db, engine_for_url(db) as engine:
        _setup(engine, CUSTOMERS)
        args = ("--batch", "10", "--ack-wait", "3", "--until-drained")
        victim, survivor = _worker(db, url, stream, *args), _worker(db, url, stream, *args)
        victim_log: list[str] = []  # its stderr lines, read as they come
        threading.Thread(target=lambda: victim_log.extend(victim.stderr), daemon=True).start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and victim.poll() is None and not (
                _count(engine) >= n // 4 and victim_log and "fetched" in victim_log[-1]):
            time.sleep(0.01)
        assert victim.poll() is None, "the victim stopped before it could be killed"
        os.kill(victim.pid, signal.SIGKILL)  # mid-batch: it fetched messages and has not acknowledged them
        victim.wait(timeout=30)
        out, err = survivor.communicate(timeout=180)
        assert survivor.returncode == 0, err[-3000:]
        totals = json.loads(out)
        assert totals["redelivered"] > 0  # the victim's messages came back, to the survivor
        assert totals["dead_letters"] == 0 and totals["conflicts"] == 0
        assert consumer_state(url, stream) == (0, 0)
        assert _state(engine) == expected


@pytest.mark.slow
def test_200k_events_two_workers_one_killed_equal_a_direct_import_postgres(nats_stream, tmp_path):
    _kill_one_of_two("postgres", 200_000, *nats_stream, tmp_path)

