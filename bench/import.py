"""`billing events import` as users run it: the CLI process on a JSONL file, against the
library's own ``Ledger.record`` of the same events in the same run, with peak memory.

    python bench/import.py --backend sqlite --sizes 1000000 5000000

For each size: a JSONL file of that many events is written; then, each in a process of its
own on a fresh database with the same customers, (1) the `billing events import` command on
the file and (2) ``Ledger.record`` of the same events built in memory (the library's rate:
no file, no JSON parsing, no process start). Prints one JSON object with, per size, both
rates, their ratio and each process's peak resident memory (``ru_maxrss`` of that child; for
the CLI also with its own children: a file over 8 MiB is parsed and validated by a second
process, ``--parallel``, sampled every 50 ms). ``one_event_s``: the command with
``--parallel`` on a file of one event, first (its fixed cost: the interpreter, its modules,
the catalog, the cost book, the engine, the second process, the exit), which the rate at
1M events carries too. Targets: CLI rate >= 0.8 x the library's; the CLI's peak resident
memory, its preparing process included, <= 300 MB at every size (the import streams: its
memory must not grow with the file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import fresh_database, run_child  # noqa: E402

PLANS = os.path.join(ROOT, "plans")
MODELS = ("claude-sonnet-4-5", "gpt-5-mini", "claude-haiku-4-5", "gemini-2.5-flash")
START = datetime(2026, 10, 1, tzinfo=UTC)


def events(n: int, customers: int):
    """October's llm.call events in time order over ``customers`` (deterministic, streamed)."""
    step = 30 * 86400 / n
    for i in range(n):
        ts = START + timedelta(seconds=int(i * step))
        yield {"id": f"evt-{i:09d}", "customer": f"cust-{i % customers:05d}", "type": "llm.call",
               "timestamp": ts.isoformat().replace("+00:00", "Z"),
               "properties": {"model": MODELS[i % 4], "input_tokens": 1500 + i % 900, "output_tokens": 200 + i % 300,
                              "feature": "support-chat", "user": f"u{i % 5000}"}}


def write_file(path: str, n: int, customers: int) -> int:
    import orjson

    with open(path, "wb") as out:
        for e in events(n, customers):
            out.write(orjson.dumps(e) + b"\n")
    return os.path.getsize(path)


def setup(url: str, customers: int) -> None:
    from billing.catalog import Catalog
    from billing.ledger.accounts import Accounts
    from billing.store.db import make_engine

    engine = make_engine(url)
    accounts = Accounts(engine, Catalog.from_paths(PLANS))
    for c in range(customers):
        accounts.create_customer(f"cust-{c:05d}", now=START)
        accounts.subscribe(f"cust-{c:05d}", "support-chatbot", at=START)
    engine.dispose()


def library_child(url: str, n: int, customers: int) -> None:
    """In a child process: build the events in memory, time ``Ledger.record`` of them."""
    from billing.catalog import Catalog
    from billing.store.db import make_engine
    from billing.ledger.ingest import Ledger

    data = list(events(n, customers))
    engine = make_engine(url)
    ledger = Ledger(engine, Catalog.from_paths(PLANS))
    t0 = time.perf_counter()
    result = ledger.record(data)
    seconds = time.perf_counter() - t0
    assert result.accepted == n, result.to_json(max_errors=3)
    print(json.dumps({"seconds": seconds}))


def measure(backend: str, n: int, customers: int, tmp: str) -> dict:
    path = os.path.join(tmp, f"events-{n}.jsonl")
    size = write_file(path, n, customers)
    env = dict(os.environ, BILLING_PLANS_DIR=PLANS)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    out: dict = {"events": n, "file_mb": round(size / 2**20, 1)}
    one = os.path.join(tmp, "one.jsonl")
    with open(one, "wb") as f:  # an event of no other file: the fixed cost, measured on the same database
        f.write(json.dumps({**next(events(1, customers)), "id": "evt-fixed-cost"}).encode() + b"\n")
    with fresh_database(backend) as url:
        setup(url, customers)
        fixed, _rss, _tree, _stdout = run_child([sys.executable, "-m", "billing", "events", "import", one, "--json",
                                                 "--parallel"], {**env, "BILLING_DATABASE_URL": url})
        seconds, rss, tree, stdout = run_child([sys.executable, "-m", "billing", "events", "import", path, "--json"],
                                               {**env, "BILLING_DATABASE_URL": url})
        summary = json.loads(stdout)
        assert summary["accepted"] == n, summary
        out["cli"] = {"seconds": round(seconds, 2), "events_per_s": round(n / seconds), "peak_rss_mb": round(rss / 1024),
                      "peak_rss_with_children_mb": round(tree / 1024), "one_event_s": round(fixed, 2)}
    with fresh_database(backend) as url:
        setup(url, customers)
        seconds, rss, _tree, stdout = run_child(
            [sys.executable, __file__, "--library-child", url, "--events", str(n), "--customers", str(customers)],
            {**env, "BILLING_DATABASE_URL": url})
        inner = json.loads(stdout)["seconds"]
        out["library"] = {"seconds": round(inner, 2), "events_per_s": round(n / inner), "peak_rss_mb": round(rss / 1024)}
    out["ratio"] = round(out["cli"]["events_per_s"] / out["library"]["events_per_s"], 3)
    os.unlink(path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--library-child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.library_child:
        library_child(args.library_child, args.events, args.customers)
        return
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(args.backend, n, args.customers, tmp) for n in args.sizes]
    print(json.dumps({"backend": args.backend, "customers": args.customers, "sizes": results,
                      "targets": {"ratio": 0.8, "cli_peak_rss_mb": 300},
                      "met": all(r["ratio"] >= 0.8 and r["cli"]["peak_rss_with_children_mb"] <= 300 for r in results)}))


if __name__ == "__main__":
    main()
