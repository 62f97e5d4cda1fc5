"""Every write door refuses an event dated in an archived month with ``event_archived``
(never written, never a 500), on SQLite and PostgreSQL: the quota commit (in process and
``POST /v1/quota/commit``: 409), ``POST /v1/events`` (the event rejected alone), the JSON
Lines import. On PostgreSQL the dropped month's partition is not created again."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.errors import BillingError
from billing.ledger import jsonl
from billing.ledger.archive import archive
from billing.ledger.ingest import Ledger
from billing.reservations.holds import Quota
from billing.store import partitions
from tests.support.archive import NOW, _count, _world, ev
from tests.support.ledger import CATALOG

OCTOBER = partitions.parse_month("2026-10")
NOVEMBER = partitions.month_start_us(OCTOBER + 1)  # the archive horizon


def _archived(engine, tmp_path):
    ledger, invoicing, invoices = _world(engine)
    for invoice in invoices:
        invoicing.mark_paid(invoice, NOW)
    assert archive(engine, "2026-11", tmp_path / "archive", "jsonl", now=NOW)["events"] == 80
    return ledger


def _october_partition(engine) -> bool:
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as conn:
        return OCTOBER in partitions.existing_months(partitions.sql_runner(conn))


def _held(engine, reservation_id: str) -> str:
    with engine.connect() as conn:
        ph = "%s" if engine.dialect.name == "postgresql" else "?"
        return conn.exec_driver_sql(f"SELECT status FROM quota_hold WHERE id = {ph}", (reservation_id,)).scalar_one()


def test_a_quota_commit_dated_in_an_archived_month_is_refused(engine, tmp_path):
    ledger = _archived(engine, tmp_path)
    ledger.close()
    quota = Quota(engine, CATALOG, clock=lambda: NOW)
    r = quota.reserve("acme", "llm_calls", 1)
    try:
        quota.commit(r.id, {"timestamp": "2026-10-20T00:00:00Z", "properties": {"input_tokens": 5}})
    except BillingError as exc:
        refused = exc
    else:
        raise AssertionError("the commit was recorded")
    assert refused.code == "event_archived" and "archived" in refused.message
    assert _held(engine, r.id) == "held" and _count(engine, f"ts < {NOVEMBER}") == 0
    assert not _october_partition(engine)
    # the same hold committed now (after the horizon) is recorded
    done = quota.commit(r.id, {"properties": {"input_tokens": 5}})
    assert done["event"] == "accepted" and _held(engine, r.id) == "committed"


def test_http_events_commit_and_import_refuse_the_archived_month(engine, tmp_path):
    _archived(engine, tmp_path)
    app = create_app(engine, CATALOG, clock=lambda: NOW, context_ttl=0, key_cache_ttl=0)
    headers = {"Authorization": f"Bearer {create_key(engine, 'admin')[1]}"}
    with TestClient(app) as client:
        recorded = client.post("/v1/events", headers=headers, json={"events": [
            ev("acme", "late", "2026-10-20T00:00:00Z"), ev("acme", "fine", "2026-11-04T00:00:00Z")]})
        assert recorded.status_code == 200, recorded.text
        assert [(x["status"], x.get("code")) for x in recorded.json()["results"]] == [
            ("rejected", "event_archived"), ("accepted", None)]
        held = client.post("/v1/quota/reserve", headers=headers, json={"customer": "beta", "meter": "llm_calls"})
        assert held.status_code == 200, held.text
        rid = held.json()["reservation_id"]
        commit = client.post("/v1/quota/commit", headers=headers, json={
            "reservation_id": rid, "event": {"timestamp": "2026-10-31T23:59:59Z", "properties": {}}})
        assert commit.status_code == 409 and commit.json()["error"]["code"] == "event_archived", commit.text
        assert _held(engine, rid) == "held"
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in (ev("beta", "imp-late", "2026-10-02T00:00:00Z"),
                                                       ev("beta", "imp-ok", "2026-11-05T00:00:00Z"))) + "\n")
    ledger = Ledger(engine, CATALOG, clock=lambda: NOW, alerts=False)
    imported = ledger.record(jsonl.JsonlEvents(path))
    ledger.close()
    assert [(x.status, x.code) for x in imported.results] == [("rejected", "event_archived"), ("accepted", None)]
    assert _count(engine, f"ts < {NOVEMBER}") == 0 and not _october_partition(engine)
