"""Forecast alerts: "at this run rate the budget is exhausted before the period ends".

The rule is the forecast's own (``billing.reports.forecast``: usage so far / elapsed
fraction of the billing window, rated by the plan): a crossing at 100 % that the projection
reaches but the usage has not yet (``reached_now`` false; ``at`` is when the run rate gets
there) queues one ``alert.triggered`` (rule ``forecast``) per customer, period and subject
(an included allowance, a charge's or the plan's spend cap, ``budget_alerts.budget``).
Only plans with alerts (``budget_alerts`` or ``cost_guard``) alert, as for thresholds; and
not before ``min_elapsed`` of the window has passed (one busy hour early in a month would
project a busy month). ``billing worker`` runs this as its ``alerts`` job.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Engine

from billing.alerts.events import enqueue_alert, iso
from billing.catalog import Catalog
from billing.quota.alerts import alerts_on
from billing.reports.forecast import METHOD, forecast
from billing.store.types import to_us

HUNDRED = Decimal(100)
MIN_ELAPSED = Decimal("0.1")


def forecast_alerts(engine: Engine, catalog: Catalog, now: datetime, *,
                    min_elapsed: Decimal = MIN_ELAPSED) -> dict[str, int]:
    """Queue the forecast crossings newly projected at ``now``; returns the counts."""
    plans = {p.ref: p for p in catalog.all()}
    rows = forecast(engine, catalog, now)
    items = []
    for row in rows:
        plan = plans.get(row.plan)
        if plan is None or not alerts_on(plan) or row.elapsed < min_elapsed:
            continue
        for c in row.crossings:
            if c.threshold != HUNDRED or c.reached_now:
                continue
            data = {"subject": c.subject, "limit": str(c.limit), "unit": c.unit, "now": str(c.now),
                    "projected": str(c.projected.quantize(Decimal("0.01"))), "at": None if c.at is None else iso(c.at),
                    "period": {"start": iso(row.period.start), "end": iso(row.period.end)},
                    "plan": row.plan, "method": METHOD}
            items.append((row.customer, f"{to_us(row.period.start)}:{c.subject}", data))
    new = 0
    if items:
        with engine.begin() as conn:
            for customer, key, data in sorted(items, key=lambda i: (i[0], i[1])):  # key order
                new += enqueue_alert(conn, customer=customer, rule="forecast", key=key, data=data, at=now)
    return {"customers": len(rows), "crossings": len(items), "alerts": new}
