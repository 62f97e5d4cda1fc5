"""The ledger at scale as users run it: each step a CLI process, timed, with the peak
resident memory of its process tree, at several sizes.

    python bench/scale.py [--backend sqlite|postgres] [--sizes 1000000 10000000]
                          [--customers 10000] [--keep-dir DIR]

For each size: a JSONL file of that many October ``llm.call`` events spread uniformly over
``--customers`` customers on the support-chatbot plan (written by a streaming generator),
then, on a fresh database with those customers (not timed: the first through ``Accounts``,
the others copies of its rows, ``bench.common.copy_customers``):

1. ``ingest``   ``billing events import FILE --json``
2. ``close``    ``billing invoice close --as-of 2026-11-01T00:00:00Z --json``
3. ``margins``  ``billing report margins --period 2026-10 --json``
4. ``by``       ``billing report margins --period 2026-10 --by feature --json``
5. ``forecast`` ``billing report forecast --as-of 2026-10-21T00:00:00Z --json``
6. ``simulate`` ``billing simulate --plan plans/support-chatbot.yaml --history 2026-10 --json``

and the floor: a bare ``GROUP BY customer`` in the database's own shell (``sqlite3`` /
``psql``, a process too) over the hourly rollups (``usage_rollup``) when the schema has
them, else over the events (``floor.over`` says which).
The database is ANALYZEd after the import (not timed; autovacuum would on PostgreSQL).

Each finished step is written to stderr as one JSON line; stdout gets one JSON object with
every step at every size (``seconds``, ``peak_rss_mb``: the process and its children,
sampled every 50 ms, and the child's own ``ru_maxrss``) and the targets, checked between the
smallest and the largest size: every report step's (margins, by, forecast, simulate) peak
memory grows by <= 1.5x; at the largest size the margin report takes <= 3 x the floor.

``--keep-dir DIR`` keeps the JSONL files, the databases (SQLite files in DIR; PostgreSQL
databases ``billing_scalebench_<tag><events>_<customers>``, ``<tag>`` from
``BILLING_SCALEBENCH_TAG``, e.g. ``mine_``, so that runs side by side do not share one) and the ingest and close figures in
DIR, and reuses them on the next run: the ingest and close steps are then reported from the
first run (``"reused": true``) and only the report steps are measured again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import DEFAULT_PG, copy_customers, fresh_database, run_child  # noqa: E402

PLANS = os.path.join(ROOT, "plans")
PLAN = "support-chatbot"
START = datetime(2026, 10, 1, tzinfo=UTC)
MODELS = ("claude-sonnet-4-5", "gpt-5-mini", "claude-haiku-4-5", "gemini-2.5-flash")
FEATURES = ("support-chat", "support-chat", "support-chat", "search", "summarize")
STEPS = {
    "ingest": ["events", "import", "{file}", "--json"],
    "close": ["invoice", "close", "--as-of", "2026-11-01T00:00:00Z", "--json"],
    "margins": ["report", "margins", "--period", "2026-10", "--json"],
    "by": ["report", "margins", "--period", "2026-10", "--by", "feature", "--json"],
    "forecast": ["report", "forecast", "--as-of", "2026-10-21T00:00:00Z", "--json"],
    "simulate": ["simulate", "--plan", os.path.join(PLANS, f"{PLAN}.yaml"), "--history", "2026-10", "--json"],
}
REPORT_STEPS = ("margins", "by", "forecast", "simulate")
MEMORY_GROWTH, FLOOR_FACTOR = 1.5, 3.0


def customer_id(i: int, customers: int) -> str:
    return f"cust-{i:0{max(5, len(str(customers - 1)))}d}"


def write_events(path: str, n: int, customers: int) -> None:
    """``n`` October events in time order, round robin over the customers (streamed to disk)."""
    step = 30 * 86400 / n
    ids = [customer_id(c, customers) for c in range(customers)]
    last, stamp, buf = -1, "", []
    with open(path + ".part", "w", buffering=1 << 20) as out:
        for i in range(n):
            second = int(i * step)
            if second != last:
                stamp = (START + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%SZ")
                last = second
            buf.append(f'{{"id":"e{i:09d}","customer":"{ids[i % customers]}","type":"llm.call",'
                       f'"timestamp":"{stamp}","properties":{{"model":"{MODELS[i % 4]}",'
                       f'"input_tokens":{1500 + i % 900},"output_tokens":{200 + i % 300},'
                       f'"feature":"{FEATURES[i % 5]}","user":"u{i % 7919}","task":"t{i % 101}"}}}}\n')
            if len(buf) >= 10000:
                out.write("".join(buf))
                buf.clear()
        out.write("".join(buf))
    os.replace(path + ".part", path)


def setup_customers(url: str, customers: int) -> None:
    """The first customer through ``Accounts``, the others as copies of its rows."""
    from billing.catalog import Catalog
    from billing.ledger.accounts import Accounts
    from billing.store.db import make_engine

    engine = make_engine(url)
    accounts = Accounts(engine, Catalog.from_paths(PLANS))
    first = customer_id(0, customers)
    accounts.create_customer(first, now=START)
    accounts.subscribe(first, PLAN, at=START)
    copy_customers(engine, first, [customer_id(c, customers) for c in range(1, customers)])
    engine.dispose()


def analyze(url: str) -> None:
    from billing.store.db import make_engine

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


def floor_query(url: str) -> tuple[str, str]:
    """(what it reads, the SQL): GROUP BY customer over the hourly rollups (``usage_rollup``:
    its events and cost) when the schema has them, else over the events."""
    from sqlalchemy import inspect

    from billing.store.db import make_engine

    engine = make_engine(url)
    try:
        has_rollups = "usage_rollup" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    if not has_rollups:
        return "usage_event", ("SELECT customer_id, COUNT(*), SUM(cost_pico) FROM usage_event "
                               "GROUP BY customer_id")
    return "usage_rollup", ("SELECT customer_id, SUM(events), SUM(cost_pico) FROM usage_rollup "
                            "GROUP BY customer_id")


def floor_argv(url: str, sql: str) -> list[str]:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return ["sqlite3", parsed.database, sql]
    plain = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    return ["psql", "-X", "-q", "-o", "/dev/null", plain, "-c", sql]


def figures(seconds: float, own_kib: int, tree_kib: int) -> dict:
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(tree_kib / 1024), "own_rss_mb": round(own_kib / 1024)}


@contextmanager
def database(backend: str, n: int, customers: int, keep: str | None, reuse: bool):
    """A fresh database, or with ``--keep-dir`` the kept one (emptied first unless ``reuse``)."""
    if keep is None:
        with fresh_database(backend) as url:
            yield url
        return
    from billing.store.db import upgrade

    if backend == "sqlite":
        file = os.path.join(keep, f"scale-{n}-{customers}.db")
        for stale in (file, file + "-wal", file + "-shm"):
            if not reuse and os.path.exists(stale):
                os.unlink(stale)
        url = f"sqlite:///{file}"
    else:
        import psycopg
        from sqlalchemy.engine import make_url

        base = make_url(os.environ.get("BILLING_BENCH_POSTGRES_URL") or os.environ.get("BILLING_TEST_POSTGRES_URL")
                        or DEFAULT_PG)
        name = f"billing_scalebench_{os.environ.get('BILLING_SCALEBENCH_TAG', '')}{n}_{customers}"
        admin = base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True) as conn:
            if not reuse:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                conn.execute(f"CREATE DATABASE {name}")
        url = base.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url


def measure(backend: str, n: int, customers: int, work: str, keep: str | None, log) -> dict:
    path = os.path.join(work, f"events-{n}-{customers}.jsonl")
    state_path = os.path.join(work, f"state-{backend}-{n}-{customers}.json")
    out: dict = {"events": n, "customers": customers, "steps": {}}
    env = dict(os.environ, BILLING_PLANS_DIR=PLANS)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    if not os.path.exists(path):
        t0 = time.perf_counter()
        write_events(path, n, customers)
        out["generate_seconds"] = round(time.perf_counter() - t0, 2)
    out["file_mb"] = round(os.path.getsize(path) / 2**20, 1)
    saved = None
    if keep and os.path.exists(state_path):
        with open(state_path) as f:
            saved = json.load(f)
    with database(backend, n, customers, keep, saved is not None) as url:
        step_env = {**env, "BILLING_DATABASE_URL": url}

        def step(name: str) -> None:
            argv = [sys.executable, "-m", "billing", *(a.format(file=path) for a in STEPS[name])]
            seconds, own, tree, stdout = run_child(argv, step_env)
            out["steps"][name] = figures(seconds, own, tree)
            if name == "ingest":
                summary = json.loads(stdout)
                assert summary["accepted"] == n, {k: summary.get(k) for k in ("accepted", "duplicates", "rejected")}
            log({"backend": backend, "events": n, "step": name, **out["steps"][name]})

        if saved is None:
            t0 = time.perf_counter()
            setup_customers(url, customers)
            out["setup_seconds"] = round(time.perf_counter() - t0, 2)
            step("ingest")
            analyze(url)
            step("close")
            if keep:
                with open(state_path, "w") as f:
                    json.dump({k: out["steps"][k] for k in ("ingest", "close")}, f)
        else:
            out["steps"] = {k: {**v, "reused": True} for k, v in saved.items()}
        for name in REPORT_STEPS:
            step(name)
        over, sql = floor_query(url)
        seconds, own, tree, _ = run_child(floor_argv(url, sql), step_env)
        out["floor"] = {"over": over, "sql": sql, **figures(seconds, own, tree)}
        log({"backend": backend, "events": n, "step": "floor", **out["floor"]})
    if not keep:
        os.unlink(path)
    return out


def targets(results: list[dict]) -> dict:
    small, large = min(results, key=lambda r: r["events"]), max(results, key=lambda r: r["events"])
    checks: dict = {}
    if large["events"] > small["events"]:
        for name in REPORT_STEPS:
            growth = large["steps"][name]["peak_rss_mb"] / max(1, small["steps"][name]["peak_rss_mb"])
            checks[f"{name}_rss_growth"] = {"value": round(growth, 2), "target": f"<= {MEMORY_GROWTH}",
                                            "met": growth <= MEMORY_GROWTH}
    ratio = large["steps"]["margins"]["seconds"] / max(0.01, large["floor"]["seconds"])
    checks["margins_over_floor"] = {"value": round(ratio, 2), "target": f"<= {FLOOR_FACTOR}",
                                    "floor_over": large["floor"]["over"], "met": ratio <= FLOOR_FACTOR}
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--keep-dir", help="keep and reuse the event files, databases and ingest/close figures here")
    args = parser.parse_args()
    if min(args.sizes) < 1 or args.customers < 1:
        parser.error("--sizes and --customers must be positive")

    def log(line: dict) -> None:
        print(json.dumps(line), file=sys.stderr, flush=True)

    if args.keep_dir:
        os.makedirs(args.keep_dir, exist_ok=True)
        results = [measure(args.backend, n, args.customers, args.keep_dir, args.keep_dir, log) for n in args.sizes]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results = [measure(args.backend, n, args.customers, tmp, None, log) for n in args.sizes]
    checks = targets(results)
    print(json.dumps({"backend": args.backend, "customers": args.customers, "sizes": results, "targets": checks,
                      "met": all(c["met"] for c in checks.values())}))


if __name__ == "__main__":
    main()
