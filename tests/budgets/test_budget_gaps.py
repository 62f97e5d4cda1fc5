"""Scoped budgets along every door, on SQLite and PostgreSQL: a soft budget crossed by
ingested usage (``Ledger.record``: the HTTP batch, import, the stream) alerts once per
crossing, and a commit counts against the budgets its reservation held when its event
leaves the scope properties out."""

from __future__ import annotations

from decimal import Decimal as D

from fastapi.testclient import TestClient
from sqlalchemy import text

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.budgets.service import Budgets
from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from billing.reservations.holds import Quota
from tests.support.budgets import budget_catalog
from tests.support.quota import NOW, T0, Clock

CAT = budget_catalog()


def _customer(engine, cid="acme"):
    acc = Accounts(engine, CAT)
    acc.create_customer(cid, now=T0, timezone="Europe/Paris")
    acc.subscribe(cid, "budgeted", at=T0)


def _batch(start: int, n: int, props: dict) -> list[dict]:
    return [{"id": f"e{start + i}", "customer": "acme", "type": "request", "timestamp": NOW.isoformat(),
             "properties": {"output_tokens": 10, **props}} for i in range(n)]


def _alerts(engine) -> tuple[list[tuple[str, D]], int]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT subject, value FROM budget_alert WHERE customer_id = 'acme' "
                                 "ORDER BY subject")).all()
        queued = conn.execute(text("SELECT COUNT(*) FROM webhook_outbox WHERE customer_id = 'acme' "
                                   "AND type = 'alert.triggered'")).scalar()
    return [(s, D(v)) for s, v in rows], queued


def test_ingested_usage_past_a_soft_budget_alerts_once_per_crossing(any_engine):
    _customer(any_engine)
    budgets = Budgets(any_engine, CAT, clock=Clock())
    budgets.create("acme", {"name": "ann-cost", "measure": "cost", "amount": "1", "window": "daily",
                            "scope": "user=ann"})
    budgets.create("acme", {"name": "all-units", "measure": "units", "meter": "requests", "amount": "1000",
                            "window": "period"})  # customer-wide, from the counters: not passed
    ledger = Ledger(any_engine, CAT, clock=Clock())
    ledger.record(_batch(0, 50, {"user": "bob", "cost": "0.1"}))  # another user's $5: out of scope
    assert _alerts(any_engine) == ([], 0)
    ledger.record(_batch(100, 9, {"user": "ann", "cost": "0.1"}))  # $0.90: not past $1
    assert _alerts(any_engine) == ([], 0)
    ledger.record(_batch(200, 2, {"user": "ann", "cost": "0.1"}))  # $1.10: crossed
    assert _alerts(any_engine) == ([("budget:1", D("1.1"))], 1)
    for k in range(5):  # more batches past the amount: the crossing fired already
        ledger.record(_batch(1000 + 100 * k, 100, {"user": "ann", "cost": "0.01"}))
    fresh = Ledger(any_engine, CAT, clock=Clock())  # another process (nothing remembered): the row decides
    fresh.record(_batch(9000, 3, {"user": "ann", "cost": "0.01"}))
    app = create_app(any_engine, CAT, clock=Clock(), context_ttl=0, key_cache_ttl=0)
    headers = {"Authorization": f"Bearer {create_key(any_engine, 'admin')[1]}"}
    with TestClient(app, headers=headers) as client:  # POST /v1/events, the same door
        r = client.post("/v1/events", json={"events": _batch(9500, 2, {"user": "ann", "cost": "0.01"})})
        assert r.status_code in (200, 201, 202, 207), r.text
    rows, queued = _alerts(any_engine)
    assert [s for s, _ in rows] == ["budget:1"] and queued == 1
    # the next day is a new window of the daily budget: one more crossing, one more alert
    Ledger(any_engine, CAT, clock=Clock(NOW.replace(day=11))).record(
        [{**e, "timestamp": NOW.replace(day=11).isoformat()} for e in _batch(20000, 11, {"user": "ann", "cost": "0.1"})])
    rows, queued = _alerts(any_engine)
    assert [s for s, _ in rows] == ["budget:1", "budget:1"] and queued == 2


def test_a_commit_counts_against_the_budgets_its_reservation_held(any_engine):
    _customer(any_engine)
    budgets = Budgets(any_engine, CAT, clock=Clock())
    budgets.create("acme", {"name": "research", "measure": "units", "meter": "requests", "amount": "3",
                            "window": "daily", "enforcement": "hard", "scope": "team=research"})
    budgets.create("acme", {"name": "beta", "measure": "cost", "amount": "100", "window": "weekly",
                            "enforcement": "hard", "scope": "tag=beta"})
    quota = Quota(any_engine, CAT, clock=Clock(), context_ttl=0)
    props = {"team": "research", "tags": ["beta"], "feature": "chat"}
    held = [quota.reserve("acme", "requests", ttl=600, cost="0.5", properties=props) for _ in range(3)]
    assert all(r.granted for r in held)
    assert quota.check("acme", "requests", properties=props).outcome == "deny"
    # commits whose events leave the scope out (or give only some of it): still the same budgets
    bodies = [{"type": "request", "properties": {"output_tokens": 1, "cost": "0.5"}},
              None,
              {"type": "request", "properties": {"output_tokens": 1, "cost": "0.5", "team": "research"}}]
    for r, body in zip(held, bodies):
        assert quota.commit(r.id, body)["event"] == "accepted"
    with any_engine.connect() as conn:
        stored = [row[0] for row in conn.execute(text(
            "SELECT properties FROM usage_event WHERE customer_id = 'acme' ORDER BY event_id")).all()]
    stored = [__import__("json").loads(p) if isinstance(p, str) else p for p in stored]
    assert [(p["team"], p["tags"]) for p in stored] == [("research", ["beta"])] * 3
    assert all("feature" not in p for p in stored)  # no budget on it: not the reservation's to fill
    d = quota.check("acme", "requests", properties=props)  # the events count where the holds did
    assert (d.outcome, d.budget["name"], d.budget["used"]) == ("deny", "research", "3")
    assert quota.check("acme", "requests", properties={"tags": ["beta"]}).budget["used"] == "1"  # 2 x 0.5 + 0
    # a retry of a commit (its first answer lost) with the same body: the stored answer
    for r, body in zip(held, bodies):
        assert quota.commit(r.id, body)["event"] == "duplicate"
    # a caller's own value is theirs: a hold whose commit names another team counts there
    r = quota.reserve("acme", "requests", ttl=600, properties={"tags": ["beta"]})
    quota.commit(r.id, {"type": "request", "properties": {"output_tokens": 1, "team": "ops", "tags": []}})
    assert quota.check("acme", "requests", properties={"team": "ops", "tags": ["beta"]}).outcome == "allow"
    quota.close()


def test_the_alerts_job_sweeps_soft_budgets_passed_behind_the_doors(any_engine):
    from billing.config import Settings
    from billing.worker.jobs import JobContext, alerts_job

    _customer(any_engine)
    Ledger(any_engine, CAT, clock=Clock(), alerts=False).record(_batch(0, 30, {"team": "ops", "cost": "0.1"}))
    Budgets(any_engine, CAT, clock=Clock()).create("acme", {  # created past what was used already
        "name": "ops-units", "measure": "units", "meter": "requests", "amount": "20", "window": "weekly",
        "scope": "team=ops"})
    assert _alerts(any_engine) == ([], 0)
    ctx = JobContext(any_engine, CAT, Settings(), clock=Clock())
    first = alerts_job(ctx)
    assert (first["soft_budget_customers"], first["budget_alerts"]) == (1, 1)
    assert _alerts(any_engine) == ([("budget:1", D(30))], 1)
    again = alerts_job(ctx)
    assert again["budget_alerts"] == 0 and _alerts(any_engine)[1] == 1
