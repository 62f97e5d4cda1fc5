"""In-process quota throughput: checks per second, and reserve + commit pairs per second.

    python bench/reserve.py --backend sqlite|postgres [--seconds 5] [--threads 16] [--customers 200] [--guards]

A fresh migrated database with ``--customers`` customers on the support-chatbot plan, each
with some usage this period. Two measurements, each with a floor measured in the same run
on the same database:

* checks: one thread calls ``Quota.check`` for each customer in turn (a fresh read of
  counters and live holds, then the decision) -> ``inprocess_checks_per_s``; the floor is
  the rate of a bare primary-key SELECT through the same driver (``floor_selects_per_s``).
  ``check_cpu_us`` is the CPU time per check (what the machine's other load does not move).
* pairs: ``--threads`` threads each loop: reserve 1 message for a random customer, then
  commit it with an llm.call event (tokens, model: costed at ingestion) ->
  ``inprocess_reserve_commit_per_s`` with latency percentiles and a consistency check
  (every committed event counted, no hold left). A pair is two durable transactions one
  after the other, so its floor is half the rate of the cheapest durable transaction (a
  one-row INSERT + COMMIT) at the same thread count (``floor_durable_tx_per_s``).

Both run after a one-second warm-up of pairs and, on PostgreSQL, an ``ANALYZE`` (the planner
statistics of a database in use; see ``main``).

``--guards``: as many customers again on a copy of the plan with cost guards
(``bench.common.GUARDED_PLAN``: evaluated on every call, outcomes unchanged) and three scoped
budgets each (``bench.common.BUDGETS``: every call and event carries ``SCOPE``), and, after
the plain measurements, ``--rounds`` rounds (default 5) of checks then pairs of the plain and
the guarded customers back to back, the order alternating (``interleaved``): each round's
ratio (``guards_checks_ratios``, ``guards_pairs_ratios``: guarded / plain), their medians
(``guards_checks_ratio``, ``guards_pairs_ratio``) and the median rates and CPU per call.
Target: guards_pairs_ratio >= 0.8 on PostgreSQL.

Prints one JSON object. Targets: >= 20,000 in-process checks/s on SQLite; >= 2,000
reserve+commit pairs/s on PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PLANS = os.path.join(ROOT, "plans")
EVENT = {"type": "llm.call", "properties": {"feature": "support-chat", "model": "claude-sonnet-4-5",
                                             "input_tokens": 2100, "output_tokens": 400, "team": "support",
                                             "user": "u-7"}}
from bench.common import SCOPE  # noqa: E402 (every call's properties: the guarded customers' budgets)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 3) if values else 0.0


def seed(engine, catalog, customers: list[str], now: datetime, plan: str = "support-chatbot") -> None:
    from billing.ledger.accounts import Accounts
    from billing.ledger.ingest import Ledger

    accounts = Accounts(engine, catalog)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    events = []
    for i, cid in enumerate(customers):
        accounts.create_customer(cid, now=start)
        accounts.subscribe(cid, plan, at=start)
        for j in range(i % 50):
            events.append({**EVENT, "id": f"seed-{i}-{j}", "customer": cid,
                           "timestamp": max(start, now - timedelta(minutes=j + 1)).isoformat()})
    Ledger(engine, catalog).record(events)


def driver_connect(url: str):
    """A plain driver connection in autocommit mode (the floors)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        import sqlite3

        conn = sqlite3.connect(u.database, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn, "?"
    import psycopg

    return psycopg.connect(u.set(drivername="postgresql").render_as_string(hide_password=False),
                           autocommit=True), "%s"


def analyze(url: str) -> None:
    """PostgreSQL's planner statistics, as autovacuum keeps them (SQLite has none unless
    asked, and the engine never asks: nothing to do there)."""
    conn, ph = driver_connect(url)
    if ph == "%s":
        conn.execute("ANALYZE")
    conn.close()


def floor_selects(url: str, customers: list[str], seconds: float) -> float:
    conn, ph = driver_connect(url)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for cid in customers:
            conn.execute(f"SELECT timezone FROM customer WHERE id = {ph}", (cid,)).fetchall()
        n += len(customers)
    rate = n / (time.perf_counter() - start)
    conn.close()
    return rate


def floor_durable_tx(url: str, threads: int, seconds: float) -> float:
    conn, ph = driver_connect(url)
    key = "INTEGER PRIMARY KEY" if ph == "?" else "BIGSERIAL PRIMARY KEY"
    conn.execute(f"CREATE TABLE IF NOT EXISTS bench_floor (id {key}, note VARCHAR(40))")
    conn.close()
    counts = [0] * threads
    barrier = threading.Barrier(threads + 1)
    stop = [0.0]

    def work(i: int) -> None:
        c, p = driver_connect(url)
        barrier.wait()
        while time.perf_counter() < stop[0]:
            c.execute("BEGIN IMMEDIATE" if p == "?" else "BEGIN")
            c.execute(f"INSERT INTO bench_floor (note) VALUES ({p})", (f"t{i}",))
            c.execute("COMMIT")
            counts[i] += 1
        c.close()

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    began = time.perf_counter()
    stop[0] = began + seconds
    barrier.wait()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - began)


def checks(quota, customers: list[str], seconds: float) -> tuple[float, float]:
    for cid in customers:
        quota.check(cid, "messages", properties=SCOPE)  # warm the context cache
    n = 0
    start, cpu0 = time.perf_counter(), time.thread_time()
    while time.perf_counter() - start < seconds:
        for cid in customers:
            quota.check(cid, "messages", properties=SCOPE)
        n += len(customers)
    return n / (time.perf_counter() - start), (time.thread_time() - cpu0) / n * 1e6


def pairs(quota, customers: list[str], threads: int, seconds: float) -> dict:
    reserve_s: list[float] = []
    commit_s: list[float] = []
    counts = {"pairs": 0, "denied": 0, "errors": 0}
    lock = threading.Lock()
    barrier = threading.Barrier(threads + 1)
    stop = [0.0]

    def worker(seed_: int) -> None:
        rng = random.Random(seed_)
        r_lat, c_lat, done, denied, errors = [], [], 0, 0, 0
        barrier.wait()
        while time.perf_counter() < stop[0]:
            cid = customers[rng.randrange(len(customers))]
            t0 = time.perf_counter()
            try:
                r = quota.reserve(cid, "messages", 1, ttl=60, properties=SCOPE)
                t1 = time.perf_counter()
                if not r.granted:
                    denied += 1
                    continue
                quota.commit(r.id, EVENT)
                t2 = time.perf_counter()
            except Exception:  # noqa: BLE001 - counted, reported
                errors += 1
                continue
            r_lat.append(t1 - t0)
            c_lat.append(t2 - t1)
            done += 1
        with lock:
            reserve_s.extend(r_lat)
            commit_s.extend(c_lat)
            counts["pairs"] += done
            counts["denied"] += denied
            counts["errors"] += errors

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    began, cpu0 = time.perf_counter(), time.process_time()
    stop[0] = began + seconds
    barrier.wait()
    for t in pool:
        t.join()
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu0
    return {**counts, "elapsed": elapsed, "per_s": counts["pairs"] / elapsed,
            "cpu_ms_per_pair": round(cpu * 1000 / max(1, counts["pairs"]), 3),
            "reserve_p50_ms": pct(reserve_s, 0.5), "reserve_p99_ms": pct(reserve_s, 0.99),
            "commit_p50_ms": pct(commit_s, 0.5), "commit_p99_ms": pct(commit_s, 0.99)}


def interleaved(quota, plain: list[str], guarded: list[str], threads: int, seconds: float, rounds: int) -> dict:
    """``rounds`` rounds, each measuring checks then pairs of the plain and of the guarded
    customers back to back, the order alternating (a drift of the machine's load cancels):
    each round's ratios (guarded / plain) and the medians."""
    med = statistics.median
    rows: dict[str, list] = {k: [] for k in ("pc", "gc", "pcpu", "gcpu", "pp", "gp", "pp_cpu", "gp_cpu", "p99")}
    check_ratios, pair_ratios, denied, errors = [], [], 0, 0
    for i in range(rounds):
        sides = (("p", plain), ("g", guarded)) if i % 2 == 0 else (("g", guarded), ("p", plain))
        found = {}
        for side, cs in sides:
            found[side + "c"] = checks(quota, cs, seconds)
        for side, cs in sides:
            found[side + "p"] = pairs(quota, cs, threads, seconds)
        for side in "pg":
            rate, cpu = found[side + "c"]
            rows[side + "c"].append(rate)
            rows[side + "cpu"].append(cpu)
            run = found[side + "p"]
            rows[side + "p"].append(run["per_s"])
            rows[side + "p_cpu"].append(run["cpu_ms_per_pair"])
            errors += run["errors"]
        denied += found["gp"]["denied"]
        rows["p99"].append(found["gp"]["reserve_p99_ms"])
        check_ratios.append(round(rows["gc"][-1] / rows["pc"][-1], 3) if rows["pc"][-1] else 0.0)
        pair_ratios.append(round(rows["gp"][-1] / rows["pp"][-1], 3) if rows["pp"][-1] else 0.0)
    return {"checks_ratio": med(check_ratios), "checks_ratios": check_ratios, "pairs_ratio": med(pair_ratios),
            "pairs_ratios": pair_ratios, "plain_checks": round(med(rows["pc"]), 1),
            "guarded_checks": round(med(rows["gc"]), 1), "plain_cpu_us": round(med(rows["pcpu"]), 1),
            "guarded_cpu_us": round(med(rows["gcpu"]), 1), "plain_pairs": round(med(rows["pp"]), 1),
            "guarded_pairs": round(med(rows["gp"]), 1), "plain_cpu_ms_per_pair": med(rows["pp_cpu"]),
            "guarded_cpu_ms_per_pair": med(rows["gp_cpu"]), "reserve_p99_ms": med(rows["p99"]),
            "denied": denied, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--guards", action="store_true",
                        help="also measure customers on a plan with cost guards (same run)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="--guards: rounds of plain and guarded measures, interleaved (the median ratios)")
    args = parser.parse_args()

    import tempfile

    from bench.common import GUARDED_PLAN, add_budgets, fresh_database, guarded_plans_dir
    from billing.catalog import Catalog
    from billing.store.db import make_engine
    from billing.reservations.holds import Quota

    now = datetime.now(UTC)
    customers = [f"cust-{i:05d}" for i in range(args.customers)]
    guarded_customers = [f"guard-{i:05d}" for i in range(args.customers)] if args.guards else []
    guarded = {}
    with fresh_database(args.backend) as url, tempfile.TemporaryDirectory() as folder:
        engine = make_engine(url)
        catalog = Catalog.from_paths(guarded_plans_dir(folder) if args.guards else PLANS)
        seed(engine, catalog, customers, now)
        if args.guards:
            seed(engine, catalog, guarded_customers, now, GUARDED_PLAN)
            add_budgets(engine, catalog, guarded_customers)
        before = {}
        quota = Quota(engine, catalog, context_ttl=5.0)
        # steady state, not a database minutes old: some holds and events written, then the
        # planner statistics a running database has (autovacuum analyzes a table once enough
        # of it changed; a brand-new one keeps plans made for empty tables until then)
        pairs(quota, customers, args.threads, min(args.seconds, 1.0))
        analyze(url)
        for cid in customers:
            before[cid] = int(quota.usage(cid)["meters"]["messages"]["used"])
        floor_sel = floor_selects(url, customers, min(args.seconds, 3.0))
        check_rate, check_cpu = checks(quota, customers, args.seconds)
        floor_tx = floor_durable_tx(url, args.threads, min(args.seconds, 3.0))
        run = pairs(quota, customers, args.threads, args.seconds)
        used = sum(int(quota.usage(cid)["meters"]["messages"]["used"]) - before[cid] for cid in customers)
        held = sum(int(quota.usage(cid)["meters"]["messages"]["held"]) for cid in customers)
        if args.guards:
            pairs(quota, guarded_customers, args.threads, min(args.seconds, 1.0))  # warm-up
            guarded = interleaved(quota, customers, guarded_customers, args.threads, args.seconds, args.rounds)
        quota.close()
        engine.dispose()

    pair_floor = floor_tx / 2
    more = {}
    if guarded:
        ratio = guarded["pairs_ratio"]
        more = {"rounds": args.rounds, "guarded_checks_per_s": guarded["guarded_checks"],
                "plain_checks_per_s_median": guarded["plain_checks"], "guards_checks_ratio": guarded["checks_ratio"],
                "guards_checks_ratios": guarded["checks_ratios"], "guarded_check_cpu_us": guarded["guarded_cpu_us"],
                "plain_check_cpu_us": guarded["plain_cpu_us"],
                "guarded_reserve_commit_per_s": guarded["guarded_pairs"],
                "plain_reserve_commit_per_s_median": guarded["plain_pairs"], "guarded_denied": guarded["denied"],
                "guarded_errors": guarded["errors"], "guarded_reserve_p99_ms": guarded["reserve_p99_ms"],
                "guarded_cpu_ms_per_pair": guarded["guarded_cpu_ms_per_pair"],
                "plain_cpu_ms_per_pair": guarded["plain_cpu_ms_per_pair"],
                "guards_pairs_ratio": round(ratio, 3), "guards_pairs_ratios": guarded["pairs_ratios"],
                "guards_target": {"guards_pairs_ratio>=0.8": ratio >= 0.8 if args.backend == "postgres" else None}}
    print(json.dumps({
        "backend": args.backend, "threads": args.threads, "customers": args.customers, "seconds": args.seconds,
        "inprocess_checks_per_s": round(check_rate, 1), "check_cpu_us": round(check_cpu, 1),
        "floor_selects_per_s": round(floor_sel, 1), "checks_vs_floor": round(check_rate / floor_sel, 3) if floor_sel else None,
        "inprocess_reserve_commit_per_s": round(run["per_s"], 1),
        "floor_durable_tx_per_s": round(floor_tx, 1), "pairs_vs_floor": round(run["per_s"] / pair_floor, 3) if pair_floor else None,
        "pairs": run["pairs"], "denied": run["denied"], "errors": run["errors"],
        "cpu_ms_per_pair": run["cpu_ms_per_pair"],
        "reserve_p50_ms": run["reserve_p50_ms"], "reserve_p99_ms": run["reserve_p99_ms"],
        "commit_p50_ms": run["commit_p50_ms"], "commit_p99_ms": run["commit_p99_ms"],
        "consistent": used == run["pairs"] and held == 0,
        "targets": {"checks>=20000/s": check_rate >= 20_000 if args.backend == "sqlite" else None,
                    "pairs>=2000/s": run["per_s"] >= 2000 if args.backend == "postgres" else None}, **more,
    }))


if __name__ == "__main__":
    main()
