"""Forecast alerts: "at this run rate the budget is exhausted before the period ends".

The rule is the forecast's own (``billing.reports.forecast``: usage so far / elapsed
fraction of the billing window, rated by the plan): a crossing at 100 % that the projection
reaches but the usage has not yet (``reached_now`` false; ``at`` is when the run rate gets
there) queues one ``alert.triggered`` (rule ``forecast``) per customer, period and subject
(an included allowance, a charge's or the plan's spend cap, ``budget_alerts.budget``).
Only plans with alerts (``budget_alerts`` or ``cost_guard``) alert, as for thresholds; and
not before ``min_elapsed`` of the window has passed (one busy hour early in a month would
project a busy month). ``billing worker`` runs this as its ``alerts`` job.

Each run forecasts only the customers whose usage or account changed since the last run, or
whose ``min_elapsed`` gate opened since (``billing.alerts.forecast_marks``: the watermarks);
a crossing is projected only after one of those, so none is missed, and its key makes it
fire once.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Engine

from billing.alerts import forecast_marks
from billing.alerts.events import enqueue_alert, iso
from billing.catalog import Catalog
from billing.quota.alerts import alerts_on
from billing.reports.forecast import METHOD, elapsed_fraction, forecast
from billing.store.types import from_us, to_us

HUNDRED = Decimal(100)
MIN_ELAPSED = Decimal("0.1")


def _changed_since(engine: Engine, now: datetime, min_elapsed: Decimal):
    """(the marks read now, ``only`` for ``forecast``: None for everyone)."""
    now_us = to_us(now)
    with engine.connect() as conn:
        marks = forecast_marks.read(conn)
        if marks.everyone(now_us):
            return marks, None
        changed = forecast_marks.changed_customers(conn, marks)
    last = from_us(marks.stored[forecast_marks.RUN_AT])

    def only(customer: str, w0: datetime, w1: datetime) -> bool:
        # (the gate opened since the last run: the rule below, at both instants)
        return customer in changed or elapsed_fraction(last, w0, w1) < min_elapsed <= elapsed_fraction(now, w0, w1)

    return marks, only


def forecast_alerts(engine: Engine, catalog: Catalog, now: datetime, *,
                    min_elapsed: Decimal = MIN_ELAPSED) -> dict[str, int]:
    """Queue the forecast crossings newly projected at ``now`` (customers changed since the
    last run, ``billing.alerts.forecast_marks``); returns the counts."""
    plans = {p.ref: p for p in catalog.all()}
    marks, only = _changed_since(engine, now, min_elapsed)
    rows = forecast(engine, catalog, now, only=only)
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
    with engine.begin() as conn:
        for customer, key, data in sorted(items, key=lambda i: (i[0], i[1])):  # key order
            new += enqueue_alert(conn, customer=customer, rule="forecast", key=key, data=data, at=now)
        forecast_marks.write(conn, marks, to_us(now))
    return {"customers": len(rows), "crossings": len(items), "alerts": new}
