"""One service rates subscription windows (``billing.invoicing.windows``): for random
subscriptions with plan changes, seat changes, credit grants with expiry and events, on
SQLite and PostgreSQL,

- the close's invoices and the to-date rating of the same windows at the period end
  (``reports.to_date``, what margins and forecasts read) bill the same total;
- a forecast's projection rated on the usage of its first rating (``known``) is the one
  rated on the usage read again;
- the history simulation of the subscription's own plan bills the close's total before
  prepaid grants (it applies no prepaid grant: their balances have moved since), where one
  subscription covers the period (a plan change is one candidate plan for the whole window
  there, by its rule).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from billing.store.aggregate_sql import max_event_id
from billing.store.models import Invoice, InvoiceLineRow
from billing.money import from_minor
from billing.rating.periods import Period
from billing.reports import repository as reports_repo
from billing.reports.to_date import rate_to_date, usage_read
from billing.simulate.core import rate_totals
from billing.simulate.history import history_totals
from tests.support.db import World, invoicing_catalog

CATALOG = invoicing_catalog()
OCTOBER = Period(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
PLANS = ("seats-requests", "copilot-premium")
MODELS = ("gpt-4.1", "claude-sonnet-4-5", "claude-opus-4-1", "o3")
_customers = itertools.count(1)


def day(n: int, hour: int = 0) -> datetime:
    return OCTOBER.start + timedelta(days=n - 1, hours=hour)


subscriptions = st.fixed_dictionaries({
    "plan": st.sampled_from(PLANS),
    "start": st.integers(1, 10),
    "seats": st.integers(0, 4),
    "seat_changes": st.lists(st.tuples(st.integers(2, 30), st.integers(0, 6)), max_size=3),
    "change": st.none() | st.tuples(st.integers(11, 28), st.sampled_from(PLANS)),
    "grants": st.lists(st.tuples(st.integers(1, 4_000).map(lambda c: Decimal(c) / 100),
                                 st.none() | st.integers(2, 40)), max_size=3),
    "events": st.lists(st.tuples(st.integers(0, 30 * 24 - 1), st.sampled_from(MODELS), st.integers(1, 40)),
                       max_size=12),
})


def _set_up(world: World, cid: str, case: dict) -> None:
    start = day(case["start"])
    world.accounts.create_customer(cid, now=start)
    world.accounts.subscribe(cid, case["plan"], at=start, seats=case["seats"])
    steps = [(day(n), "seats", seats) for n, seats in case["seat_changes"] if day(n) > start]
    if case["change"] is not None:
        steps.append((day(case["change"][0], 12), "plan", case["change"][1]))
    for at, what, value in sorted(steps, key=lambda s: (s[0], s[1])):
        if what == "seats":
            world.accounts.change_seats(cid, value, at=at)
        else:
            world.accounts.change_plan(cid, value, at=at)
    for n, (amount, expires) in enumerate(case["grants"]):
        world.accounts.grant_credits(cid, amount, at=OCTOBER.start, grant_id=f"{cid}-g{n}",
                                     expires_at=OCTOBER.start + timedelta(days=expires) if expires else None)
    world.at(OCTOBER.end)
    events = []
    for n, (hour, model, count) in enumerate(case["events"]):
        ts = max(OCTOBER.start + timedelta(hours=hour), start)
        events += [{"id": f"{cid}-{n}-{i}", "customer": cid, "type": "request", "timestamp": ts.isoformat(),
                    "properties": {"model": model}} for i in range(count)]
    world.record(events)


def _rated_to_date(world: World, cid: str) -> Decimal:
    with world.engine.connect() as conn:
        subs = [s for s in reports_repo.subscriptions_overlapping(conn, OCTOBER.start, OCTOBER.end)
                if s.customer_id == cid]
        rated = rate_to_date(conn, CATALOG, subs, {cid: OCTOBER}, OCTOBER.end, max_event_id(conn))
        conn.rollback()
    return sum((w.invoice.total for w in rated), Decimal(0))


def _scaled_both_ways(world: World, cid: str) -> tuple[list, list]:
    """The windows to mid-October rated scaled by 7/3 (a forecast's projection): on the usage
    read again, and on the usage of the first rating (``known``, as the forecast does)."""
    as_of, k = OCTOBER.start + timedelta(days=13, hours=5), Decimal(7) / Decimal(3)
    with world.engine.connect() as conn:
        subs = [s for s in reports_repo.subscriptions_overlapping(conn, OCTOBER.start, OCTOBER.end)
                if s.customer_id == cid]
        mark = max_event_id(conn)
        first = rate_to_date(conn, CATALOG, subs, {cid: OCTOBER}, as_of, mark)
        again = rate_to_date(conn, CATALOG, subs, {cid: OCTOBER}, as_of, mark, scale={cid: k})
        known = rate_to_date(conn, CATALOG, subs, {cid: OCTOBER}, as_of, mark, scale={cid: k},
                             known=usage_read(first))
        conn.rollback()
    return [(w.invoice, w.usage) for w in again], [(w.invoice, w.usage) for w in known]


def _closed(world: World, cid: str) -> tuple[Decimal, Decimal]:
    """The close's total for the customer's October, and the prepaid credit it drew."""
    world.invoicing.close(OCTOBER.end)
    with world.engine.connect() as conn:
        docs = conn.execute(select(Invoice.id, Invoice.total_minor, Invoice.currency)
                            .where(Invoice.customer_id == cid, Invoice.period_start < OCTOBER.end)).all()
        grant_ids = {f"{cid}-g{n}" for n in range(10)}
        credit_minor = sum(amount for key, amount in conn.execute(
            select(InvoiceLineRow.key, InvoiceLineRow.amount_minor)
            .where(InvoiceLineRow.invoice_id.in_([i for i, _, _ in docs]))) if key in grant_ids)
    currency = docs[0][2]
    return from_minor(sum(t for _, t, _ in docs), currency), from_minor(credit_minor, currency)


def _simulated(world: World, cid: str, plan_id: str) -> Decimal:
    plan = CATALOG.get(plan_id, 1)
    period, totals = history_totals(world.engine, "2026-10", [plan], as_of=OCTOBER.end)
    mine = [t for t in totals if t.customer == cid]
    (result,) = rate_totals([plan], mine, period, source="history").results[plan.ref]
    return result.revenue


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=subscriptions)
def test_close_to_date_and_history_rate_a_window_alike(module_engine, case):
    world = World(module_engine, CATALOG, day(case["start"]))
    cid = f"w{next(_customers)}"
    _set_up(world, cid, case)
    to_date = _rated_to_date(world, cid)
    again, known = _scaled_both_ways(world, cid)
    assert again == known, case
    closed, prepaid = _closed(world, cid)
    assert to_date == closed, case
    if case["change"] is None:
        assert _simulated(world, cid, case["plan"]) == closed - prepaid, case


def test_a_forecast_scales_a_dimension_meter_value_by_value():
    """``scaled_totals`` (forecasts) scales each value's totals with the meter's: a dimension
    price keeps pricing each value at its own price; a value aggregation stays as observed."""
    from billing.catalog import Catalog
    from billing.invoicing.windows import scaled_totals
    from billing.rating.types import MeterTotals
    from tests.support.db import PLANS_DIR

    plan = Catalog.from_paths(PLANS_DIR).get("model-gateway", 1)
    totals = MeterTotals(Decimal(30), 3, Decimal("0.3"), (), (("gpt-4o", Decimal(20), Decimal("0.2"), 2),
                                                            (None, Decimal(10), Decimal("0.1"), 1)))
    assert scaled_totals(plan, "output_tokens", totals, Decimal(2)) == MeterTotals(
        Decimal(60), 6, Decimal("0.6"), (), (("gpt-4o", Decimal(40), Decimal("0.4"), 4),
                                             (None, Decimal(20), Decimal("0.2"), 2)))
    levels = Catalog.from_paths(PLANS_DIR).get("vector-store", 1)
    latest = MeterTotals(Decimal(300_500), 2)
    assert scaled_totals(levels, "index_vectors", latest, Decimal(2)) == latest
