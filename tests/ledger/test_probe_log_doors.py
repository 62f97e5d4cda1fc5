"""The doors of ``test_doors.py`` plus the two through the durable log: events published to
the stream and recorded by the ingest worker, and ``POST /v1/events`` with ``Prefer:
respond-async`` (then the worker). The fixed stream (alerts, agent task usage, a late event
after a close) must leave the same ledger as the HTTP batch, rollups included (the hourly
rollups reports read). Found here: quota commits add nothing to the rollups (xfail below),
so a margin report read from them shows a committed call's cost as 0."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.ingest_log.publisher import EventLogPublisher
from billing.ingest_log.worker import IngestWorker
from billing.ledger.ingest import Ledger
from tests.ledger.test_doors import MONTH, NOW, STAMPS, Doors, _iso, doors  # noqa: F401
from tests.support.event_log import nats_server_url


def _rollups(engine) -> list[tuple]:
    with engine.connect() as conn:
        cols = [c for c in conn.exec_driver_sql("SELECT * FROM usage_rollup LIMIT 0").keys() if c != "id"]
        rows = conn.exec_driver_sql(f"SELECT {', '.join(cols)} FROM usage_rollup").all()
    return sorted((tuple(str(v) for v in r) for r in rows))


class LogDoors(Doors):
    def __init__(self, base: Doors, nats_url: str, stream: str):
        super().__init__(base.url, base.plans_dir, base.tmp)
        self.nats_url, self.stream = nats_url, stream

    def _drain(self, engine) -> None:
        worker = IngestWorker(Ledger(engine, self.catalog), self.nats_url, self.stream, batch=5, fetch_timeout=0.3)
        asyncio.run(asyncio.wait_for(worker.run(asyncio.Event(), until_drained=True), 120))

    def _statuses(self, engine, events: list[dict]) -> list[tuple]:
        return [("accepted", None)] * len(events)  # (statuses are the worker's log: not compared)

    def _stream(self, engine, events: list[dict]) -> list[tuple]:
        publisher = EventLogPublisher(self.nats_url, self.stream, max_events=3)
        try:
            publisher.publish(events)
        finally:
            publisher.close()
        self._drain(engine)
        return self._statuses(engine, events)

    def _async(self, engine, events: list[dict]) -> list[tuple]:
        app = create_app(engine, self.catalog, context_ttl=0, key_cache_ttl=0)
        publisher = app.state.event_log = EventLogPublisher(self.nats_url, self.stream, max_events=3)
        key = create_key(engine, "ingest")[1]
        try:
            with TestClient(app) as client:
                r = client.post("/v1/events", json=events, headers={"Authorization": f"Bearer {key}",
                                                                     "Prefer": "respond-async"})
                assert r.status_code == 202, r.text
        finally:
            publisher.close()  # (the app's shutdown closes it too: closing twice is harmless)
        self._drain(engine)
        return self._statuses(engine, events)

    @staticmethod
    def _snapshot(engine, statuses):
        snap = Doors._snapshot(engine, statuses)
        snap["rollups"] = _rollups(engine)
        return snap


@pytest.fixture
def log_doors(doors, nats_stream):  # noqa: F811
    return LogDoors(doors, *nats_stream)


def test_the_log_doors_make_the_ledger_and_rollups_of_the_http_batch(log_doors):
    nats_server_url()
    if NOW - MONTH <= timedelta(hours=3):
        pytest.skip("the current month began less than 3 hours ago")
    stamp = _iso(STAMPS[-1])
    events = [{"id": f"c{i}", "customer": "acme", "type": "llm.call", "timestamp": stamp,
               "properties": {"model": "claude-sonnet-4-5", "input_tokens": 10 * i, "output_tokens": 5, "run": "r9",
                              "feature": "chat"}} for i in range(5)]
    events.append({**events[1]})  # a duplicate
    late = [{**events[0], "id": "late", "timestamp": _iso(STAMPS[0])}]
    reference = log_doors.run("http", (events, late))
    assert reference["rollups"] and {a[3] for a in reference["alerts"]} == {"50", "100"}
    for door in ("client", "commit", "stream", "async"):
        got = log_doors.run(door, (events, late))
        for key in ("events", "counters", "tasks", "alerts", "documents", "rollups"):
            if (door, key) == ("commit", "rollups"):
                continue  # below: quota commits write no rollups yet
            assert got[key] == reference[key], (door, key)


@pytest.mark.xfail(strict=True, reason="quota commits (reservations/writer.py, events.write_pg/write_sqlite) "
                                       "write events, counters and task usage but no hourly rollups: reports "
                                       "reading rollups miss every committed event (see the probe report)")
def test_quota_commits_add_to_the_rollups_as_every_other_door(doors):  # noqa: F811
    if NOW - MONTH <= timedelta(hours=3):
        pytest.skip("the current month began less than 3 hours ago")
    stamp = _iso(STAMPS[-1])
    events = [{"id": f"c{i}", "customer": "acme", "type": "llm.call", "timestamp": stamp,
               "properties": {"model": "claude-sonnet-4-5", "input_tokens": 10 * i, "output_tokens": 5,
                              "feature": "chat"}} for i in range(3)]
    probe = LogDoors(doors, "", "unused")
    reference = probe.run("http", (events, []))
    assert reference["rollups"]
    assert probe.run("commit", (events, []))["rollups"] == reference["rollups"]
