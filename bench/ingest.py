"""Ingestion throughput against a floor measured in the same run.

    python bench/ingest.py --backend sqlite|postgres --events 200000

Prints {"events_per_s", "floor_per_s", "ratio", ...}. The floor is a bare executemany
INSERT of the same rows (same columns, same unique key) into a plain table in the same
database: what the driver and database cost with no validation, costing, idempotency
classification or counters. Targets (N = 200,000): SQLite >= 100,000 events/s and
ratio >= 0.4; PostgreSQL >= 40,000 events/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import fresh_database  # noqa: E402

PLANS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plans")
MODELS = ("claude-sonnet-4-5", "gpt-5-mini", "claude-haiku-4-5", "gemini-2.5-flash")


def make_events(n: int, customers: int, seed: int = 1, users: int = 0) -> list[dict]:
    """A month of llm.call events in arrival (time) order, spread over ``customers`` (and,
    with ``users``, a ``user`` property taking that many values per customer)."""
    rng = random.Random(seed)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    offsets = sorted(rng.randrange(30 * 86400) for _ in range(n))
    out = []
    for i in range(n):
        ts = start + timedelta(seconds=offsets[i])
        out.append({"id": f"evt-{i:09d}", "customer": f"cust-{i % customers:05d}", "type": "llm.call",
                    "timestamp": ts.isoformat().replace("+00:00", "Z"),
                    "properties": {"model": MODELS[i % 4], "input_tokens": 1500 + i % 900,
                                   "output_tokens": 200 + i % 300, "feature": "support-chat"}})
        if users:
            out[-1]["properties"]["user"] = f"u{rng.randrange(users)}"
    return out


def floor(url: str, events: list[dict]) -> float:
    """Bare executemany INSERT of the same rows into a plain table with the same unique key."""
    from billing.store.db import make_engine

    engine = make_engine(url)
    pg = engine.dialect.name == "postgresql"
    rows = [(e["customer"], e["id"], e["type"], int(datetime.fromisoformat(e["timestamp"]).timestamp() * 1e6),
             json.dumps(e["properties"]), e["properties"]["model"], 0) for e in events]
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE bench_floor (id BIGSERIAL PRIMARY KEY, customer_id varchar(200), "
                             "event_id varchar(200), type varchar(100), ts bigint, properties json, "
                             "model varchar(200), cost_pico bigint, UNIQUE (customer_id, event_id))" if pg else
                             "CREATE TABLE bench_floor (id INTEGER PRIMARY KEY, customer_id varchar(200), "
                             "event_id varchar(200), type varchar(100), ts bigint, properties json, "
                             "model varchar(200), cost_pico bigint, UNIQUE (customer_id, event_id))")
    ph = ",".join(["%s" if pg else "?"] * 7)
    sql = (f"INSERT INTO bench_floor (customer_id, event_id, type, ts, properties, model, cost_pico) "
           f"VALUES ({ph})")
    t0 = time.perf_counter()
    with engine.begin() as conn:  # one executemany, one transaction: the cheapest way in
        conn.connection.driver_connection.cursor().executemany(sql, rows)
    seconds = time.perf_counter() - t0
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE bench_floor")
    engine.dispose()
    return len(rows) / seconds


def setup_customers(url: str, customers: int) -> None:
    from billing.catalog import Catalog
    from billing.ledger.accounts import Accounts
    from billing.store.db import make_engine

    engine = make_engine(url)
    catalog = Catalog.from_paths(PLANS)
    accounts = Accounts(engine, catalog)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    for c in range(customers):
        accounts.create_customer(f"cust-{c:05d}", now=start)
        accounts.subscribe(f"cust-{c:05d}", "support-chatbot", at=start)
    engine.dispose()


def ingest(url: str, events: list[dict]) -> float:
    """Ledger.record of every event (validation, costing, idempotent insert, counters)."""
    from billing.catalog import Catalog
    from billing.store.db import make_engine
    from billing.ledger.ingest import Ledger

    engine = make_engine(url)
    catalog = Catalog.from_paths(PLANS)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    ledger = Ledger(engine, catalog, clock=lambda: now)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM usage_event")
        conn.exec_driver_sql("DELETE FROM usage_counter")
        if engine.dialect.name == "postgresql" and conn.exec_driver_sql(
                "SELECT to_regclass('usage_event_key')").scalar() is not None:
            conn.exec_driver_sql("DELETE FROM usage_event_key")  # (the keys outlive their events by design)
        if conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'usage_rollup'" if conn.dialect.name == "sqlite"
                                else "SELECT to_regclass('usage_rollup')").scalar():
            conn.exec_driver_sql("DELETE FROM usage_rollup")
    t0 = time.perf_counter()
    result = ledger.record(events)
    seconds = time.perf_counter() - t0
    assert result.accepted == len(events), result.to_json(max_errors=3)
    engine.dispose()
    return len(events) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--users", type=int, default=0,
                        help="Give each event a `user` property, one of this many per customer (0: none).")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds; the best of each is kept.")
    args = parser.parse_args()
    events = make_events(args.events, args.customers, users=args.users)
    floors, rates = [], []
    with fresh_database(args.backend) as url:
        setup_customers(url, args.customers)
        for _ in range(args.rounds):  # interleaved, so a noisy neighbour hits both sides alike
            floors.append(floor(url, events))
            rates.append(ingest(url, events))
    rate, floor_rate = max(rates), max(floors)
    print(json.dumps({"backend": args.backend, "events": args.events, "events_per_s": round(rate),
                      "floor_per_s": round(floor_rate), "ratio": round(rate / floor_rate, 3),
                      "rounds": {"events_per_s": [round(r) for r in rates], "floor_per_s": [round(f) for f in floors]}}))


if __name__ == "__main__":
    main()
