"""Closing a billing period for many customers, against the bare SQL GROUP BY.

    python bench/invoice.py --customers 10000 --events 2000000 [--backend sqlite|postgres]

Prints {"customers_per_s", "seconds", "aggregate_floor_seconds", ...}: ``seconds`` is one
``Invoicing.close`` (SQL meter aggregation, rating through the pure engine, invoices and
lines written, numbers taken); the floor is a bare GROUP BY customer over the same events.
Setup (customers, subscriptions, events) is bulk-loaded and not timed. Target: >= 2,000
customers/s on SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import UTC, datetime

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import fresh_database  # noqa: E402

PLANS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plans")
MODELS = ("claude-sonnet-4-5", "gpt-5-mini", "claude-haiku-4-5", "gemini-2.5-flash")
PERIOD_START = datetime(2026, 10, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 11, 1, tzinfo=UTC)


def load(url: str, customers: int, events: int, plan: str) -> None:
    from sqlalchemy import insert

    from billing.ledger.db import make_engine
    from billing.ledger.models import Customer, SeatChange, Subscription
    from billing.ledger.types import to_us

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
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def aggregate_floor(url: str) -> float:
    from billing.ledger.db import make_engine
    from billing.ledger.types import to_us

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


def close(url: str) -> tuple[float, int]:
    from billing.catalog import Catalog
    from billing.invoicing.service import Invoicing
    from billing.ledger.db import make_engine

    engine = make_engine(url)
    invoicing = Invoicing(engine, Catalog.from_paths(PLANS), clock=lambda: PERIOD_END)
    t0 = time.perf_counter()
    result = invoicing.close(PERIOD_END)
    seconds = time.perf_counter() - t0
    engine.dispose()
    return seconds, len(result.invoices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--plan", default="team", help="Plan every customer is on (plans/).")
    args = parser.parse_args()
    with fresh_database(args.backend) as url:
        load(url, args.customers, args.events, args.plan)
        floor_seconds = aggregate_floor(url)
        seconds, invoices = close(url)
    assert invoices == args.customers, (invoices, args.customers)
    print(json.dumps({"backend": args.backend, "customers": args.customers, "events": args.events,
                      "plan": args.plan, "customers_per_s": round(args.customers / seconds),
                      "seconds": round(seconds, 3), "aggregate_floor_seconds": round(floor_seconds, 3)}))


if __name__ == "__main__":
    main()
