"""A capacity charge through the ledger (SQLite and PostgreSQL): its meters' period peaks
come from the running ``max`` counters for the quota and from the close's SQL for the
invoice, and both bill the tier the Python aggregation picks (``agent-platform``)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from billing.catalog import Catalog, load_plan_file
from billing.events import parse_event
from billing.invoicing.service import Invoicing
from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from billing.money import from_minor
from billing.rating.engine import RatingInput, rate_period
from billing.rating.meters import aggregate
from billing.rating.periods import calendar_month
from billing.reservations.holds import Quota
from billing.store.aggregate_sql import aggregate_meters, max_event_id
from billing.store.types import to_us
from tests.support.db import documents
from tests.support.quota import PLANS

D = Decimal
OCT = calendar_month(2026, 10)
NOW = datetime(2026, 10, 31, 23, tzinfo=UTC)


def heartbeat(i: int, day: int, agents: int, memory: str) -> dict:
    return {"id": f"h{i}", "customer": "acme", "type": "agent.heartbeat", "timestamp": f"2026-10-{day:02d}T12:00:00Z",
            "properties": {"running_agents": agents, "memory_gb": float(memory)}}


def test_capacity_peaks_agree_in_the_quota_and_the_close(engine):
    plan = load_plan_file(PLANS / "agent-platform.yaml")
    catalog = Catalog([plan])
    accounts = Accounts(engine, catalog)
    accounts.create_customer("acme", now=OCT.start)
    accounts.subscribe("acme", "agent-platform", at=OCT.start)
    # agents peak at 3 (fits tier 1), memory at 16.5 GB (tier 2): 199.00
    events = [heartbeat(1, 2, 2, "8"), heartbeat(2, 9, 3, "16.5"), heartbeat(3, 15, 1, "4")]
    assert Ledger(engine, catalog, clock=lambda: NOW).record(events).accepted == 3

    python = aggregate(plan, [parse_event(e) for e in events], OCT.start, OCT.end)
    assert (python["agents"].units, python["memory_gb"].units) == (D(3), D("16.5"))
    with engine.connect() as conn:
        sql = aggregate_meters(conn, plan, ["acme"], to_us(OCT.start), to_us(OCT.end), max_event_id(conn))["acme"]
    assert (sql["agents"].units, sql["memory_gb"].units) == (D(3), D("16.5"))
    rated = rate_period(RatingInput(plan, "acme", OCT, python))
    assert sum((ln.amount for ln in rated.lines if ln.key == "capacity"), D(0)) == D("199.00")

    quota = Quota(engine, catalog, clock=lambda: NOW)
    try:
        spends = {c["charge"]: D(c["spend"]) for c in quota.usage("acme")["charges"]}
        assert spends["capacity"] == D("199.00")
        # one more GB of memory still fits tier 2; 48 more leave it (799.00)
        assert quota.check("acme", "memory_gb", 1).amount == D(0)
        assert quota.check("acme", "memory_gb", 48).amount == D("600.00")
    finally:
        quota.close()

    Invoicing(engine, catalog, clock=lambda: OCT.end).close(as_of=OCT.end)
    (invoice,) = documents(engine)
    lines = invoice[10]
    assert sum((from_minor(ln[5], "USD") for ln in lines if ln[2] == "capacity"), D(0)) == D("199.00")
    assert from_minor(invoice[8], "USD") == D("228.00")  # + the 29.00 platform fee
