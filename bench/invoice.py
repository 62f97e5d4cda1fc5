"""Closing a billing period for many customers, against the bare SQL GROUP BY.

    python bench/invoice.py --customers 10000 --events 2000000 [--backend sqlite|postgres]

Prints {"customers_per_s", "seconds", "aggregate_floor_seconds", ...}: ``seconds`` is one
``Invoicing.close`` (the ledger snapshot, usage from the running counters where they are
exact and from SQL aggregation of the events otherwise, rating through the pure engine,
invoices and lines written, numbers taken); the floor is a bare GROUP BY customer over the
same events, in the same run. Setup (customers, subscriptions, events bulk-loaded, then
the counters rebuilt by ``recount_all``, the code ingestion runs) is not timed. After the
close, ``--verify`` customers are re-rated from their events and every stored line is
checked. Then ``--late`` October events arrive (through the ledger) and November is
closed too (``next_close_seconds``: every October invoice re-checked, the changed periods
re-rated, November rated). Target: >= 2,000 customers/s on SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import fresh_database  # noqa: E402

PLANS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plans")
MODELS = ("claude-sonnet-4-5", "gpt-5-mini", "claude-haiku-4-5", "gemini-2.5-flash")
PERIOD_START = datetime(2026, 10, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 11, 1, tzinfo=UTC)


def load(url: str, customers: int, events: int, plan: str) -> None:
    from sqlalchemy import insert

    from billing.store.db import make_engine
    from billing.store.models import Customer, SeatChange, Subscription
    from billing.store.partitions import ensure_range
    from billing.store.types import to_us

    engine = make_engine(url)
    ids = [f"cust-{i:05d}" for i in range(customers)]
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [
            {"id": c, "name": "", "timezone": "UTC", "currency": "USD", "created_at": PERIOD_START} for c in ids])
        conn.execute(insert(Subscription.__table__), [
            {"id": n + 1, "customer_id": c, "plan_id": plan, "plan_version": 1, "status": "active",
             "started_at": PERIOD_START, "anchor_at": PERIOD_START, "created_at": PERIOD_START}
            for n, c in enumerate(ids)])
        conn.execute(insert(SeatChange.__table__), [
            {"subscription_id": n + 1, "effective_at": PERIOD_START, "seats": 1 + n % 5, "created_at": PERIOD_START}
            for n in range(customers)])
    rng = random.Random(3)
    start_us, span = to_us(PERIOD_START), to_us(PERIOD_END) - to_us(PERIOD_START)
    pg = engine.dialect.name == "postgresql"
    ph = ",".join(["%s" if pg else "?"] * 7)
    sql = f"INSERT INTO usage_event (customer_id, event_id, type, ts, properties, model, cost_pico) VALUES ({ph})"
    batch = []
    stamps = sorted(start_us + rng.randrange(span) for _ in range(events))  # events arrive in time order
    with engine.begin() as conn:  # PostgreSQL's monthly partitions (written behind the ledger's back)
        ensure_range(conn, start_us, start_us + span)
    for i in range(events):
        model = MODELS[i % 4]
        tin, tout = 1000 + rng.randrange(3000), 100 + rng.randrange(800)
        batch.append((ids[rng.randrange(customers)], f"e{i:09d}", "llm.call", stamps[i],
                      json.dumps({"model": model, "input_tokens": tin, "output_tokens": tout,
                                  "feature": "support-chat"}), model, (tin * 3 + tout * 15) * 1_000_000))
        if len(batch) == 100_000:
            with engine.begin() as conn:
                conn.connection.driver_connection.cursor().executemany(sql, batch)
            batch = []
    if batch:
        with engine.begin() as conn:
            conn.connection.driver_connection.cursor().executemany(sql, batch)
    from billing.catalog import Catalog
    from billing.ledger.recount import recount_all

    with engine.begin() as conn:  # the counters ingestion would have kept (same CounterPlanner code)
        recount_all(conn, Catalog.from_paths(PLANS))
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def aggregate_floor(url: str) -> float:
    from billing.store.db import make_engine
    from billing.store.types import to_us

    engine = make_engine(url)
    ph = "%s" if engine.dialect.name == "postgresql" else "?"
    t0 = time.perf_counter()
    with engine.begin() as conn:
        cur = conn.connection.driver_connection.cursor()
        cur.execute(f"SELECT customer_id, COUNT(*), SUM(cost_pico) FROM usage_event WHERE ts >= {ph} AND ts < {ph} "
                    "GROUP BY customer_id", (to_us(PERIOD_START), to_us(PERIOD_END)))
        rows = cur.fetchall()
    seconds = time.perf_counter() - t0
    assert rows
    engine.dispose()
    return seconds


def close(url: str):
    from billing.catalog import Catalog
    from billing.invoicing.service import Invoicing
    from billing.store.db import make_engine

    engine = make_engine(url)
    invoicing = Invoicing(engine, Catalog.from_paths(PLANS), clock=lambda: PERIOD_END)
    t0 = time.perf_counter()
    result = invoicing.close(PERIOD_END)
    seconds = time.perf_counter() - t0
    engine.dispose()
    return seconds, result


def next_close(url: str, customers: int, late: int) -> tuple[float, object]:
    """``late`` events for October arrive through the ledger (counters and all), then
    November is closed: every October invoice is re-checked for late events (from the
    counters), the periods that got some are re-rated, November is rated."""
    from billing.catalog import Catalog
    from billing.invoicing.service import Invoicing
    from billing.store.db import make_engine
    from billing.ledger.ingest import Ledger

    engine = make_engine(url)
    catalog = Catalog.from_paths(PLANS)
    november_end = datetime(2026, 12, 1, tzinfo=UTC)
    rng = random.Random(11)
    events = [{"id": f"late{i}", "customer": f"cust-{rng.randrange(customers):05d}", "type": "llm.call",
               "timestamp": datetime(2026, 10, 1 + rng.randrange(30), 12, tzinfo=UTC).isoformat(),
               "properties": {"model": MODELS[i % 4], "input_tokens": 500_000, "output_tokens": 100_000}}
              for i in range(late)]
    assert Ledger(engine, catalog, clock=lambda: november_end).record(events).accepted == late
    invoicing = Invoicing(engine, catalog, clock=lambda: november_end)
    t0 = time.perf_counter()
    result = invoicing.close(november_end)
    seconds = time.perf_counter() - t0
    engine.dispose()
    return seconds, result


def verify(url: str, customers: int, sample: int) -> int:
    """Re-rate ``sample`` random customers from their events (SQL aggregation up to the
    close's watermark, the pure engine) and check every stored line and total is the same."""
    from sqlalchemy import select

    from billing.catalog import Catalog
    from billing.invoicing.documents import line_rows
    from billing.store.aggregate_sql import aggregate_window
    from billing.store.db import make_engine
    from billing.store.grants_and_seats import seat_histories
    from billing.store.models import Invoice, InvoiceLineRow
    from billing.store.types import to_us
    from billing.store.wide import join
    from billing.rating.engine import RatingInput, rate_period
    from billing.rating.periods import BillingCycle

    engine = make_engine(url)
    catalog = Catalog.from_paths(PLANS)
    period = BillingCycle("month", "calendar", "UTC").period_containing(PERIOD_START)
    picked = sorted(random.Random(7).sample([f"cust-{i:05d}" for i in range(customers)], min(sample, customers)))
    with engine.connect() as conn:
        invoices = {r.customer_id: r for r in conn.execute(select(Invoice).where(Invoice.customer_id.in_(picked)))}
        stored: dict[int, list[tuple]] = {}
        for ln in conn.execute(select(InvoiceLineRow).where(InvoiceLineRow.invoice_id.in_(
                [i.id for i in invoices.values()])).order_by(InvoiceLineRow.position)):
            stored.setdefault(ln.invoice_id, []).append(
                (ln.kind, ln.key, ln.description, ln.quantity, ln.unit_price, ln.amount_minor))
        plan = catalog.get(next(iter(invoices.values())).plan_id, 1)
        watermark = next(iter(invoices.values())).ledger_watermark
        usage, costs = aggregate_window(conn, plan, picked, to_us(period.start), to_us(period.end), watermark)
        seats = seat_histories(conn, [i.subscription_id for i in invoices.values()])
    engine.dispose()
    for cid in picked:
        inv = invoices[cid]
        rated = rate_period(RatingInput(plan, cid, period, usage[cid], seats[inv.subscription_id],
                                        provider_cost=costs.get(cid, Decimal(0))))
        fresh = [(r["kind"], r["key"], r["description"], r["quantity"], r["unit_price"], r["amount_minor"])
                 for r in line_rows(rated, period.start, period.end)]
        assert fresh == stored[inv.id], (cid, fresh, stored[inv.id])
        assert inv.total_minor == sum(r[-1] for r in fresh)
        assert join(inv.provider_cost_carry, inv.provider_cost_pico) == int(rated.provider_cost * 10 ** 12), cid
    return len(picked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--plan", default="team", help="Plan every customer is on (plans/).")
    parser.add_argument("--verify", type=int, default=500,
                        help="Customers re-rated from their events after the close to check the invoices.")
    parser.add_argument("--late", type=int, default=200,
                        help="Late October events ingested before a second close (November); 0: no second close.")
    args = parser.parse_args()
    with fresh_database(args.backend) as url:
        load(url, args.customers, args.events, args.plan)
        floor_seconds = aggregate_floor(url)
        seconds, result = close(url)
        verified = verify(url, args.customers, args.verify) if args.verify else 0
        second = next_close(url, args.customers, args.late) if args.late else None
    assert len(result.invoices) == args.customers, (len(result.invoices), args.customers)
    out = {"backend": args.backend, "customers": args.customers, "events": args.events,
           "plan": args.plan, "customers_per_s": round(args.customers / seconds),
           "seconds": round(seconds, 3), "aggregate_floor_seconds": round(floor_seconds, 3),
           "floor_ratio": round(floor_seconds / seconds, 2),
           "rated_from_counters": result.rated_from_counters, "verified_against_events": verified}
    if second is not None:
        next_seconds, next_result = second
        assert len(next_result.invoices) == args.customers
        out.update({"late_events": args.late, "next_close_seconds": round(next_seconds, 3),
                    "next_close_adjusted_periods": next_result.adjusted_periods})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
