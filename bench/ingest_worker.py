"""Ingestion through the durable log (NATS JetStream) with 1 and 2 workers, beside the
direct-ingest rate in the same run.

    python bench/ingest_worker.py --backend postgres --events 200000 [--nats nats://127.0.0.1:4222]

For each worker count: a fresh stream, ``billing ingest-worker`` processes started and
waiting on it, then the events published (batches of 1,000 events a message) and the clock
run until the last one is committed in the ledger: events/s end to end (publish, deliver,
Ledger.record, acknowledge). The direct rate is ``Ledger.record`` of the same events in
this process (``bench/ingest.py``). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import fresh_database  # noqa: E402
from bench.ingest import PLANS, ingest, make_events, setup_customers  # noqa: E402


def _count(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT COUNT(*) FROM usage_event").scalar_one()


def _empty(engine) -> None:
    """The ledger as before the direct run: its events, their keys (PostgreSQL's partitioned
    ledger claims them in ``usage_event_key``: left there, every event is a duplicate), the
    counters, rollups and task usage."""
    from sqlalchemy import inspect

    tables = set(inspect(engine).get_table_names())
    with engine.begin() as conn:
        for table in ("usage_event", "usage_event_key", "usage_counter", "usage_rollup", "agent_task_usage"):
            if table in tables:
                conn.exec_driver_sql(f"DELETE FROM {table}")


async def _delete_stream(url: str, stream: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    except Exception:
        pass
    await nc.close()


def through_log(db: str, nats_url: str, events: list[dict], workers: int, batch: int) -> dict:
    from billing.ingest_log.publisher import EventLogPublisher
    from billing.store.db import make_engine

    engine = make_engine(db)
    _empty(engine)
    stream = f"bench_{uuid.uuid4().hex[:10]}"
    env = dict(os.environ, BILLING_DATABASE_URL=db, BILLING_PLANS_DIR=PLANS)
    procs = [subprocess.Popen([sys.executable, "-m", "billing", "ingest-worker", "--nats", nats_url, "--stream",
                               stream, "--batch", str(batch), "--json"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for _ in range(workers)]
    publisher = EventLogPublisher(nats_url, stream)
    try:
        time.sleep(3)  # the workers are up and waiting on the stream (their start is not timed)
        t0 = time.perf_counter()
        publisher.publish(events)
        published = time.perf_counter() - t0
        seen, moved = -1, time.perf_counter()
        while (n := _count(engine)) < len(events):
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a worker stopped early")
            if n != seen:
                seen, moved = n, time.perf_counter()
            elif time.perf_counter() - moved > 120:
                raise SystemExit(f"no event recorded for 120 s ({n} of {len(events)} in the ledger)")
            time.sleep(0.02)
        seconds = time.perf_counter() - t0
    finally:
        publisher.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        totals = [json.loads(p.communicate(timeout=60)[0] or "{}") for p in procs]
        asyncio.run(_delete_stream(nats_url, stream))
        engine.dispose()
    return {"events_per_s": round(len(events) / seconds), "publish_per_s": round(len(events) / published),
            "seconds": round(seconds, 2), "events_per_worker": [t.get("events") for t in totals]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=20, help="Messages (of 1,000 events) per worker fetch.")
    parser.add_argument("--nats", default=os.environ.get("BILLING_NATS_URL", "nats://127.0.0.1:4222"))
    args = parser.parse_args()
    events = make_events(args.events, args.customers)
    with fresh_database(args.backend) as url:
        setup_customers(url, args.customers)
        direct = ingest(url, events)
        one = through_log(url, args.nats, events, 1, args.batch)
        two = through_log(url, args.nats, events, 2, args.batch)
    print(json.dumps({"backend": args.backend, "events": args.events, "direct_events_per_s": round(direct),
                      "one_worker": one, "two_workers": two}))


if __name__ == "__main__":
    main()
