"""A page deep in a list costs what the first page costs (keyset pagination), in process.

    python bench/lists.py [--backend sqlite|postgres] [--events 100000] [--requests 100] [--limit 100]

Seeds a fresh migrated database with ``--events`` usage events of 50 customers, then times
``GET /v1/events?limit=N`` through the app in process (Starlette's TestClient: no network):
the first page and a page after a cursor 90% of the way through the list, the same two for
one customer's events (80% of the way), and ``GET /healthz`` as the floor. Prints one JSON object: the median
milliseconds of each and ``deep_ratio`` / ``deep_customer_ratio`` (deep page / first page).
Target: both ratios <= 2 (an offset-based page would grow with its depth).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from billing.api.app import create_app
    from billing.api.auth import create_key
    from billing.api.pagination import encode
    from billing.ledger.accounts import Accounts
    from billing.ledger.ingest import Ledger
    from billing.store.pages import Key
    from tests.support.db import engine_for_url, fresh_database, shipped_catalog

    catalog = shipped_catalog()
    start = datetime(2026, 10, 1, tzinfo=UTC)
    with ExitStack() as stack:
        url = stack.enter_context(fresh_database(args.backend, stack.enter_context(tempfile.TemporaryDirectory())))
        engine = stack.enter_context(engine_for_url(url))
        accounts = Accounts(engine, catalog)
        customers = [f"c{i:02d}" for i in range(50)]
        for c in customers:
            accounts.create_customer(c, now=start)
            accounts.subscribe(c, "support-chatbot", at=start)
        ledger = Ledger(engine, catalog, clock=lambda: start + timedelta(days=40))
        step = timedelta(days=30) / args.events
        ledger.record(({"id": f"e{i}", "customer": customers[i % 50], "type": "request",
                        "timestamp": (start + step * i).isoformat(), "properties": {}} for i in range(args.events)),
                      chunk_size=20_000)
        ledger.close()
        client = TestClient(create_app(engine, catalog, key_cache_ttl=60))
        headers = {"Authorization": f"Bearer {create_key(engine, 'read')[1]}"}
        with engine.connect() as conn:
            deep = conn.exec_driver_sql(
                f"SELECT ts, id FROM usage_event ORDER BY ts, id LIMIT 1 OFFSET {int(args.events * 0.9)}").one()
            deep_one = conn.exec_driver_sql(
                "SELECT ts, id FROM usage_event WHERE customer_id = 'c07' ORDER BY ts, id "
                f"LIMIT 1 OFFSET {int(args.events / 50 * 0.8)}").one()

        def page(**params):
            r = client.get("/v1/events", params={"limit": args.limit, **params}, headers=headers)
            assert r.status_code == 200 and len(r.json()["data"]) == args.limit, r.text[:300]

        n = args.requests
        out = {"backend": args.backend, "events": args.events, "limit": args.limit,
               "floor_ms": _median_ms(lambda: client.get("/healthz"), n),
               "first_ms": _median_ms(lambda: page(), n),
               "deep_ms": _median_ms(lambda: page(starting_after=encode("events", Key(*deep))), n),
               "first_customer_ms": _median_ms(lambda: page(customer="c07"), n),
               "deep_customer_ms": _median_ms(lambda: page(customer="c07",
                                                           starting_after=encode("events", Key(*deep_one))), n)}
        out["deep_ratio"] = round(out["deep_ms"] / out["first_ms"], 3)
        out["deep_customer_ratio"] = round(out["deep_customer_ms"] / out["first_customer_ms"], 3)
        print(json.dumps(out))


if __name__ == "__main__":
    main()
