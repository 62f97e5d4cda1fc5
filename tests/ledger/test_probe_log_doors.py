"""The doors through the durable log beside the others (``test_doors.py`` has the HTTP batch,
the import, the client and commits): events published to the stream and recorded by the
ingest worker, and ``POST /v1/events`` with ``Prefer: respond-async`` (then the worker). A
fixed stream (budget alerts, agent task usage, a late event after a close, a duplicate) must
leave the ledger of the HTTP batch, hourly rollups included (what reports read). Found here:
quota commits added nothing to the rollups, so a margin report read from them showed a
committed call's cost as 0 (``billing.reservations.commit_rollups`` since)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.catalog import Catalog, parse_plan_text
from billing.client import LocalClient
from billing.ingest_log.publisher import EventLogPublisher
from billing.ingest_log.worker import IngestWorker
from billing.invoicing.service import Invoicing
from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from billing.reservations.holds import Quota
from tests.support.db import counter_rows, documents, engine_for_url, reset_database
from tests.support.ledger import DOORS_YAML, task_rows

NOW = datetime.now(UTC).replace(microsecond=0)
MONTH = NOW.replace(day=1, hour=0, minute=0, second=0)
PREVIOUS = (MONTH - timedelta(days=1)).replace(day=1)
CATALOG = Catalog([parse_plan_text(DOORS_YAML, "doors.yaml")])


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _stream() -> tuple[list[dict], list[dict]]:
    stamp = _iso(MONTH + (NOW - MONTH) / 2)
    events = [{"id": f"c{i}", "customer": "acme", "type": "llm.call", "timestamp": stamp,
               "properties": {"model": "claude-sonnet-4-5", "input_tokens": 10 * i, "output_tokens": 5, "run": "r9",
                              "feature": "chat"}} for i in range(5)]
    events.append(dict(events[1]))  # a duplicate
    late = [{**events[0], "id": "late", "timestamp": _iso(PREVIOUS + timedelta(days=3))}]
    return events, late


def _snapshot(engine) -> dict:
    with engine.connect() as conn:
        events = sorted((r[0], r[1], r[2], r[3], json.loads(r[4]) if isinstance(r[4], str) else r[4], r[5], r[6])
                        for r in conn.exec_driver_sql("SELECT customer_id, event_id, type, ts, properties, model, "
                                                      "cost_pico FROM usage_event").all())
        alerts = sorted(tuple(r) for r in conn.exec_driver_sql(
            "SELECT customer_id, period_start, subject, threshold FROM budget_alert").all())
        cols = [c for c in conn.exec_driver_sql("SELECT * FROM usage_rollup LIMIT 0").keys() if c != "id"]
        rollups = sorted(tuple(str(v) for v in r)
                         for r in conn.exec_driver_sql(f"SELECT {', '.join(cols)} FROM usage_rollup").all())
    docs = [(d[1], d[2], d[3], d[4], str(d[6]), str(d[7]), d[8], d[9], d[10]) for d in documents(engine)]
    return {"events": events, "counters": counter_rows(engine), "tasks": task_rows(engine), "alerts": alerts,
            "documents": docs, "rollups": rollups}


class Doors:
    def __init__(self, url: str, nats: tuple[str, str] | None = None):
        self.url, self.nats = url, nats

    def run(self, door: str) -> dict:
        reset_database(self.url)
        with engine_for_url(self.url) as engine:
            acc = Accounts(engine, CATALOG)
            acc.create_customer("acme", now=PREVIOUS)
            acc.subscribe("acme", "doors", at=PREVIOUS)
            for i, part in enumerate(_stream()):
                getattr(self, f"_{door}")(engine, part)
                if i == 0:  # the previous month finalized: the late event is a correction
                    Invoicing(engine, CATALOG).close(MONTH)
            Invoicing(engine, CATALOG).close(MONTH)
            return _snapshot(engine)

    def _http(self, engine, events: list[dict]) -> None:
        app = create_app(engine, CATALOG, context_ttl=0, key_cache_ttl=0)
        with TestClient(app) as client:
            key = create_key(engine, "ingest")[1]
            r = client.post("/v1/events", json=events, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text

    def _client(self, engine, events: list[dict]) -> None:
        quota = Quota(engine, CATALOG)
        try:
            LocalClient(quota).record(events)
        finally:
            quota.close()

    def _commit(self, engine, events: list[dict]) -> None:
        quota = Quota(engine, CATALOG)
        try:
            for e in events:
                hold = quota.reserve(e["customer"], "calls")
                assert hold.granted, hold.decision
                quota.commit(hold.id, e)
        finally:
            quota.close()

    def _drain(self, engine) -> None:
        worker = IngestWorker(Ledger(engine, CATALOG), *self.nats, batch=5, fetch_timeout=0.3)
        asyncio.run(asyncio.wait_for(worker.run(asyncio.Event(), until_drained=True), 120))

    def _stream(self, engine, events: list[dict]) -> None:
        publisher = EventLogPublisher(*self.nats, max_events=3)
        try:
            publisher.publish(events)
        finally:
            publisher.close()
        self._drain(engine)

    def _async(self, engine, events: list[dict]) -> None:
        app = create_app(engine, CATALOG, context_ttl=0, key_cache_ttl=0)
        publisher = app.state.event_log = EventLogPublisher(*self.nats, max_events=3)
        try:
            with TestClient(app) as client:
                r = client.post("/v1/events", json=events, headers={
                    "Authorization": f"Bearer {create_key(engine, 'ingest')[1]}", "Prefer": "respond-async"})
                assert r.status_code == 202, r.text
        finally:
            publisher.close()  # (the app's shutdown closes it too: closing twice is harmless)
        self._drain(engine)


needs_time_this_month = pytest.mark.skipif(NOW - MONTH <= timedelta(hours=3),
                                           reason="the current month began less than 3 hours ago")


@needs_time_this_month
def test_the_log_doors_make_the_ledger_and_rollups_of_the_http_batch(db_url, nats_stream):
    doors = Doors(db_url, nats_stream)
    reference = doors.run("http")
    assert reference["rollups"] and {a[3] for a in reference["alerts"]} == {"50", "100"}
    assert reference["tasks"]
    for door in ("client", "stream", "async"):
        assert doors.run(door) == reference, door
    assert doors.run("commit") == reference


@needs_time_this_month
def test_quota_commits_add_to_the_rollups_as_every_other_door(db_url):
    doors = Doors(db_url)
    assert doors.run("commit")["rollups"] == doors.run("http")["rollups"]
