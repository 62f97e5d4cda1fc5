"""Two-phase quota throughput: reserve + commit pairs per second, in process.

    python bench/reserve.py --backend postgres|sqlite [--seconds 5] [--threads 16] [--customers 200]

A fresh migrated database with ``--customers`` customers on the support-chatbot plan;
``--threads`` threads each loop: reserve 1 message for a random customer, then commit it
with an llm.call event (tokens, model: costed at ingestion). Prints one JSON object:
pairs/s, reserve and commit latency percentiles (ms), and a consistency check (every
committed event counted, no hold left). Target: >= 2,000 pairs/s on PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from datetime import UTC, datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PLANS = os.path.join(ROOT, "plans")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--customers", type=int, default=200)
    args = parser.parse_args()

    from sqlmodel import SQLModel

    import billing.ledger.quota_models  # noqa: F401
    from bench.common import fresh_database
    from billing.catalog import Catalog
    from billing.ledger.accounts import Accounts
    from billing.ledger.db import make_engine
    from billing.ledger.holds import Quota

    now = datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    with fresh_database(args.backend) as url:
        engine = make_engine(url, **({"pool_size": args.threads + 4} if args.backend == "postgres" else {}))
        SQLModel.metadata.create_all(engine)
        catalog = Catalog.from_paths(PLANS)
        accounts = Accounts(engine, catalog)
        customers = [f"cust-{i:05d}" for i in range(args.customers)]
        for cid in customers:
            accounts.create_customer(cid, now=start)
            accounts.subscribe(cid, "support-chatbot", at=start)
        quota = Quota(engine, catalog, context_ttl=5.0, writers=int(os.environ.get("QW", "0")) or None)
        for cid in customers:
            quota.check(cid, "messages")

        reserve_ms: list[float] = []
        commit_ms: list[float] = []
        counts = {"pairs": 0, "denied": 0, "errors": 0}
        lock = threading.Lock()
        barrier = threading.Barrier(args.threads + 1)
        stop_at = [0.0]

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            r_lat, c_lat, pairs, denied, errors = [], [], 0, 0, 0
            barrier.wait()
            while time.perf_counter() < stop_at[0]:
                cid = customers[rng.randrange(len(customers))]
                t0 = time.perf_counter()
                try:
                    r = quota.reserve(cid, "messages", 1, ttl=60)
                    t1 = time.perf_counter()
                    if not r.granted:
                        denied += 1
                        continue
                    quota.commit(r.id, {"type": "llm.call", "properties": {
                        "feature": "support-chat", "model": "claude-sonnet-4-5", "input_tokens": 2100,
                        "output_tokens": 400}})
                    t2 = time.perf_counter()
                except Exception:  # noqa: BLE001 - counted, reported
                    errors += 1
                    continue
                r_lat.append(t1 - t0)
                c_lat.append(t2 - t1)
                pairs += 1
            with lock:
                reserve_ms.extend(r_lat)
                commit_ms.extend(c_lat)
                counts["pairs"] += pairs
                counts["denied"] += denied
                counts["errors"] += errors

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
        for t in threads:
            t.start()
        began = time.perf_counter()
        cpu0 = time.process_time()
        stop_at[0] = began + args.seconds
        barrier.wait()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu0

        used = sum(int(quota.usage(cid)["meters"]["messages"]["used"]) for cid in customers)
        held = sum(int(quota.usage(cid)["meters"]["messages"]["held"]) for cid in customers)
        engine.dispose()
        quota.close()

    def pct(values: list[float], p: float) -> float:
        values = sorted(values)
        return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 3) if values else 0.0

    rate = counts["pairs"] / elapsed
    print(json.dumps({
        "backend": args.backend, "threads": args.threads, "customers": args.customers, "seconds": round(elapsed, 2),
        "pairs": counts["pairs"], "pairs_per_s": round(rate, 1), "denied": counts["denied"],
        "errors": counts["errors"], "cpu_ms_per_pair": round(cpu * 1000 / max(1, counts["pairs"]), 3),
        "reserve_p50_ms": pct(reserve_ms, 0.5), "reserve_p99_ms": pct(reserve_ms, 0.99),
        "commit_p50_ms": pct(commit_ms, 0.5), "commit_p99_ms": pct(commit_ms, 0.99),
        "consistent": used == counts["pairs"] and held == 0,
        "targets": {"pairs>=2000/s": rate >= 2000 if args.backend == "postgres" else None},
    }))


if __name__ == "__main__":
    main()
