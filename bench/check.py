"""Quota check latency and throughput over HTTP, against a trivial endpoint of the same app.

    python bench/check.py [--backend sqlite|postgres] [--seconds 5] [--concurrency 16]
                          [--customers 200] [--load wrk|python] [--guards]

Starts ``billing serve``'s app (uvicorn, one worker) on a fresh migrated database seeded
with customers on the support-chatbot plan (some usage each), then drives it from a
separate load process at ``--concurrency`` keep-alive connections: first ``GET /healthz``
(the floor: same app, no auth, no database), then ``POST /v1/quota/check`` (an API key, a
decision over the database). The load process is ``wrk`` when it is installed (a C load
generator: it leaves the CPU to the server; ``apt-get install wrk``), else a minimal
asyncio HTTP/1.1 client in a second Python process (``--load python`` forces it; it
competes with the server for CPU, so its latencies are the pessimistic ones).

On PostgreSQL the database is ``ANALYZE``d after seeding (as ``bench/reserve.py`` does).

Prints one JSON object: ``check_rps``, ``floor_rps``, ``ratio`` (check / floor),
``check_p50_ms``, ``check_p99_ms`` (and the floor's percentiles, errors, the load
generator used). Targets: ratio >= 0.6, check p99 <= 10 ms at 16 connections.

``--customers N`` customers are seeded (the first 100 through ``Accounts``, the rest as
copies of the first one's rows: a 100,000-customer population in about a minute on
PostgreSQL, most of it recording their 100,000 events; ``seed_seconds`` says how long) and, in the same
run, the checks are also spread uniformly at random over all N (every request a customer
drawn afresh: with N = 100,000 nearly every check misses the server's one-second context
cache and loads the customer's plan, period and seats): ``spread_rps``, ``spread_p99_ms``,
``spread_ratio`` (spread / one customer); the server process's CPU time per answered check
(``/proc``), one customer and spread (``server_cpu_us_per_check``,
``server_cpu_us_per_spread_check``; ``spread_cpu_ratio``: one / spread, what the throughput
ratio of a CPU-bound server would be); ``spread_context_hit_rate``: the share of the spread
checks whose context the server had cached (``GET /metrics``), ``context_cache_size`` the
contexts it held after them. Targets for ``--customers 100000``: spread_ratio
>= 0.7, spread p99 <= 10 ms at 16 connections.

``--guards``: as many customers again on a copy of the plan with cost guards
(``bench.common.GUARDED_PLAN``: evaluated on every check, outcome unchanged) and three scoped
budgets each (``bench.common.BUDGETS``: every check carries ``SCOPE``), and the checks
measured on one of them against one plain customer with the same body, in ``--rounds``
rounds (default 5) of ``--seconds`` each side, interleaved, the order alternating:
``guards_ratios`` (each round's guarded / plain), ``guards_ratio`` (their median),
``guarded_check_rps`` and ``plain_check_rps_median``; and, robust to the machine's other load, the
server process's CPU time per answered check (``/proc``; ``server_cpu_us_per_check_plain``,
``..._guarded``) and ``guards_cpu_ratio`` (plain CPU / guarded CPU per check, median of the rounds:
the throughput ratio of a CPU-bound server). Target: guards_ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PLANS = os.path.join(ROOT, "plans")

# ------------------------------------------------------------------ wrk load

_WRK_SCRIPT = """
wrk.method = os.getenv("BENCH_METHOD")
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
wrk.headers["Content-Type"] = "application/json"
local spread = tonumber(os.getenv("BENCH_SPREAD") or "0")
local width = tonumber(os.getenv("BENCH_WIDTH") or "5")
local statuses = 0
if spread > 0 then
  request = function()
    local body = string.format('{"customer": "cust-%0' .. width .. 'd", "meter": "messages"}', math.random(0, spread - 1))
    return wrk.format(nil, nil, nil, body)
  end
end
setup = function(thread)
  thread:set("seed", math.random(1, 2147483647))
end
init = function(args)
  math.randomseed(seed or os.time())
end
response = function(status, headers, body)
  if status ~= 200 then statuses = statuses + 1 end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "errors": %d}\\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout + e.status))
end
"""


def wrk_load(port: int, method: str, path: str, body: str, key: str, seconds: float, concurrency: int,
             spread: int = 0) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT)
    try:
        env = {**os.environ, "BENCH_METHOD": method, "BENCH_BODY": body, "BENCH_KEY": key,
               "BENCH_SPREAD": str(spread), "BENCH_WIDTH": str(id_width(spread))}
        out = subprocess.run(["wrk", "-t", "2", "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s",
                              "-s", script.name, f"http://127.0.0.1:{port}{path}"],
                             capture_output=True, text=True, check=True, env=env)
    finally:
        os.unlink(script.name)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1]
    r = json.loads(line)
    return {"requests": r["requests"], "rps": round(r["requests"] / (r["duration_us"] / 1e6), 1),
            "errors": r["errors"], "p50_ms": r["p50_us"] / 1000, "p90_ms": r["p90_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000, "max_ms": r["max_us"] / 1000}


# --------------------------------------------------------- python load process

async def _worker(host: str, port: int, requests: list[bytes], until: float, latencies: list[float],
                  errors: list[int]):
    reader, writer = await asyncio.open_connection(host, port)
    pick = random.Random().choice
    try:
        while time.perf_counter() < until:
            request = requests[0] if len(requests) == 1 else pick(requests)
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


def python_load(host: str, port: int, method: str, path: str, body: str, key: str, seconds: float,
                concurrency: int, spread: int = 0) -> dict:
    bodies = [spread_body(c, spread) for c in range(spread)] if spread else [body]
    requests = []
    for text in bodies:
        payload = text.encode()
        requests.append((f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
                        + payload)
    latencies: list[float] = []
    errors: list[int] = []

    async def main():
        until = time.perf_counter() + seconds
        await asyncio.gather(*[_worker(host, port, requests, until, latencies, errors) for _ in range(concurrency)])

    start = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 3) if latencies else 0.0

    return {"requests": len(latencies), "rps": round(len(latencies) / elapsed, 1), "errors": len(errors),
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0)}


def run_load(generator: str, port: int, method: str, path: str, body: str, key: str, seconds: float,
             concurrency: int, spread: int = 0) -> dict:
    """The load always comes from another process than the server's. ``spread`` > 0: each
    request asks about a customer drawn uniformly from the first ``spread`` (``body`` unused)."""
    if generator == "wrk":
        return wrk_load(port, method, path, body, key, seconds, concurrency, spread)
    args = json.dumps([port, method, path, body, key, seconds, concurrency, spread])
    out = subprocess.run([sys.executable, __file__, "--load-process", args], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def id_width(customers: int) -> int:
    return max(5, len(str(customers - 1)))


def customer_id(i: int, customers: int) -> str:
    return f"cust-{i:0{id_width(customers)}d}"


def spread_body(i: int, customers: int) -> str:
    return json.dumps({"customer": customer_id(i, customers), "meter": "messages"})


# ------------------------------------------------------------------------- setup

LIBRARY_SEEDED = 100  # customers set up through Accounts (a transaction each); the rest are copies of the first's rows


def seed(url: str, customers: int, now: datetime, plans: str = PLANS, guarded: bool = False,
         library: int = LIBRARY_SEEDED) -> str:
    from sqlmodel import SQLModel

    import billing.store.operational_models  # noqa: F401
    from billing.api.auth import create_key
    from billing.catalog import Catalog
    from billing.ledger.accounts import Accounts
    from billing.store.db import make_engine
    from billing.ledger.ingest import Ledger

    engine = make_engine(url)
    SQLModel.metadata.create_all(engine)
    catalog = Catalog.from_paths(plans)
    acc = Accounts(engine, catalog)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    events = []
    from bench.common import GUARDED_PLAN

    population = [(customer_id(i, customers), "support-chatbot", i) for i in range(customers)]
    if guarded:
        population += [(f"guard-{i:05d}", GUARDED_PLAN, i) for i in range(customers)]
    templates: dict[str, str] = {}
    copies: dict[str, list[str]] = {}
    for cid, plan, i in population:
        if i < library:
            acc.create_customer(cid, now=start)
            acc.subscribe(cid, plan, at=start)
            templates.setdefault(plan, cid)
        else:
            copies.setdefault(plan, []).append(cid)
        for j in range(i % 50 if i < library else i % 3):
            events.append({"id": f"e-{i}-{j}", "customer": cid, "type": "llm.call",
                           "timestamp": max(start, now - timedelta(minutes=j + 1)).isoformat(),
                           "properties": {"feature": "support-chat", "model": "claude-sonnet-4-5",
                                          "input_tokens": 2100, "output_tokens": 400, "team": "support",
                                          "user": "u-7"}})
    from bench.common import copy_customers

    for plan, cids in sorted(copies.items()):
        copy_customers(engine, templates[plan], cids)
    Ledger(engine, catalog).record(events)
    if guarded:
        from bench.common import add_budgets

        add_budgets(engine, catalog, [cid for cid, plan, _ in population if plan == GUARDED_PLAN])
    _, key = create_key(engine, "check")
    engine.dispose()
    return key


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process ``pid`` has used (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_cpu(pid: int, run) -> dict:
    """``run()``'s load figures with the server's CPU time per answered request
    (``cpu_us_per_request``): what the server spends on each, whatever else the machine runs."""
    before = cpu_seconds(pid)
    found = run()
    spent = cpu_seconds(pid) - before
    done = found.get("requests")
    found["cpu_s"] = spent
    found["cpu_us_per_request"] = round(spent / done * 1e6, 1) if done else None
    return found


def context_cache(port: int) -> dict:
    """The server's quota context cache counters (``GET /metrics``): hit, miss, size."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("billing_quota_context_cache_total{"):
            out[line.split('result="', 1)[1].split('"', 1)[0]] = int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("billing_quota_context_cache_size "):
            out["size"] = int(float(line.rsplit(" ", 1)[1]))
    return out


def hit_rate(before: dict, after: dict) -> float | None:
    """The share of context lookups between two ``context_cache`` readings that hit."""
    hits = after.get("hit", 0) - before.get("hit", 0)
    looked = hits + after.get("miss", 0) - before.get("miss", 0)
    return round(hits / looked, 3) if looked else None


def interleaved(measure, plain: str, guarded: str, rounds: int) -> dict:
    """``rounds`` rounds of the plain and the guarded body measured back to back, the order
    alternating (plain first, then guarded first: a drift of the machine's load cancels);
    each round's ratio (guarded / plain) and the medians. On a shared machine one pair of
    runs moves by more than the gap; the median of the rounds' ratios does not."""
    ratios, plain_rps, guarded_rps, p99s, errors = [], [], [], [], 0
    cpu_ratios, plain_cpu, guarded_cpu = [], [], []
    for i in range(rounds):
        order = (plain, guarded) if i % 2 == 0 else (guarded, plain)
        found = {body: measure(body) for body in order}
        p, g = found[plain], found[guarded]
        ratios.append(round(g["rps"] / p["rps"], 3) if p["rps"] else 0.0)
        if p.get("cpu_us_per_request") and g.get("cpu_us_per_request"):
            plain_cpu.append(p["cpu_us_per_request"])
            guarded_cpu.append(g["cpu_us_per_request"])
            cpu_ratios.append(round(p["cpu_us_per_request"] / g["cpu_us_per_request"], 3))
        plain_rps.append(p["rps"])
        guarded_rps.append(g["rps"])
        p99s.append(g["p99_ms"])
        errors += g["errors"] + p["errors"]
    med = statistics.median
    return {"ratio": med(ratios), "ratios": ratios, "plain_rps": med(plain_rps),
            "cpu_ratio": med(cpu_ratios) if cpu_ratios else None, "cpu_ratios": cpu_ratios,
            "plain_cpu_us": med(plain_cpu) if plain_cpu else None,
            "guarded_cpu_us": med(guarded_cpu) if guarded_cpu else None,
            "guarded_rps": statistics.median(guarded_rps), "guarded_p99_ms": statistics.median(p99s),
            "errors": errors}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(url: str, port: int, plans: str = PLANS) -> subprocess.Popen:
    env = {**os.environ, "BILLING_DATABASE_URL": url, "BILLING_PLANS_DIR": plans, "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "billing.api.app:create_app", "--factory",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                             "--no-access-log"], env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--customers", type=int, default=200,
                        help="customers seeded; the spread checks are drawn uniformly from all of them")
    parser.add_argument("--load", choices=["wrk", "python"], default=None,
                        help="load generator (default: wrk when installed, else python)")
    parser.add_argument("--guards", action="store_true",
                        help="also measure checks of customers on a plan with cost guards (same run)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="--guards: rounds of plain and guarded checks, interleaved (the median ratio)")
    parser.add_argument("--library-seeded", type=int, default=LIBRARY_SEEDED,
                        help="customers set up through Accounts; the rest are copies of their rows")
    parser.add_argument("--load-process", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.load_process and args.customers < 1:
        parser.error("--customers must be positive")
    if args.load_process:
        port, method, path, body, key, seconds, concurrency, spread = json.loads(args.load_process)
        print(json.dumps(python_load("127.0.0.1", port, method, path, body, key, seconds, concurrency, spread)))
        return
    generator = args.load or ("wrk" if shutil.which("wrk") else "python")
    if generator == "wrk" and not shutil.which("wrk"):
        parser.error("--load wrk: wrk is not installed (apt-get install wrk)")

    from bench.common import fresh_database, guarded_plans_dir

    now = datetime.now(UTC)
    guarded = None
    with fresh_database(args.backend) as url, tempfile.TemporaryDirectory() as folder:
        plans = guarded_plans_dir(folder) if args.guards else PLANS
        started = time.perf_counter()
        key = seed(url, args.customers, now, plans, args.guards, max(1, args.library_seeded))
        seed_seconds = round(time.perf_counter() - started, 1)
        from bench.reserve import analyze

        # the planner statistics a running database has (autovacuum analyzes a table once enough
        # of it changed): without them a freshly seeded 100,000 customers are read with plans
        # made for empty tables (sequential scans), which no deployment runs with
        analyze(url)
        port = free_port()
        server = start_server(url, port, plans)
        try:
            from bench.common import SCOPE

            # --guards compares like with like: both one-customer bodies carry the budgets' SCOPE
            body = json.dumps({"customer": "cust-00042", "meter": "messages", "properties": SCOPE}) if args.guards \
                else spread_body(42 % args.customers, args.customers)
            run_load(generator, port, "POST", "/v1/quota/check", body, key, 1.0, args.concurrency)  # warm-up
            run_load(generator, port, "GET", "/healthz", "", key, 1.0, args.concurrency)
            floor = run_load(generator, port, "GET", "/healthz", "", key, args.seconds, args.concurrency)
            check = with_cpu(server.pid, lambda: run_load(generator, port, "POST", "/v1/quota/check", body, key,
                                                          args.seconds, args.concurrency))
            run_load(generator, port, "POST", "/v1/quota/check", body, key, 1.0, args.concurrency, args.customers)
            before = context_cache(port)
            spread = with_cpu(server.pid, lambda: run_load(generator, port, "POST", "/v1/quota/check", body, key,
                                                           args.seconds, args.concurrency, args.customers))
            after = context_cache(port)
            if args.guards:
                gbody = json.dumps({"customer": "guard-00042", "meter": "messages", "properties": SCOPE})
                run_load(generator, port, "POST", "/v1/quota/check", gbody, key, 1.0, args.concurrency)
                guarded = interleaved(lambda b: with_cpu(server.pid, lambda: run_load(
                    generator, port, "POST", "/v1/quota/check", b, key, args.seconds, args.concurrency)),
                    body, gbody, args.rounds)
        finally:
            server.terminate()
            server.wait(10)
    ratio = check["rps"] / floor["rps"] if floor["rps"] else 0.0
    spread_ratio = spread["rps"] / check["rps"] if check["rps"] else 0.0
    more = {}
    if guarded is not None:
        guards_ratio = guarded["ratio"]
        more = {"rounds": args.rounds, "plain_check_rps_median": guarded["plain_rps"],
                "guarded_check_rps": guarded["guarded_rps"], "guarded_check_p99_ms": guarded["guarded_p99_ms"],
                "guarded_check_errors": guarded["errors"], "guards_ratio": round(guards_ratio, 3),
                "guards_ratios": guarded["ratios"], "server_cpu_us_per_check_plain": guarded["plain_cpu_us"],
                "server_cpu_us_per_check_guarded": guarded["guarded_cpu_us"],
                "guards_cpu_ratio": guarded["cpu_ratio"], "guards_cpu_ratios": guarded["cpu_ratios"],
                "guards_target": {"guards_ratio>=0.8": guards_ratio >= 0.8,
                                  "guards_cpu_ratio>=0.8": (guarded["cpu_ratio"] or 0) >= 0.8}}
    print(json.dumps({
        "backend": args.backend, "concurrency": args.concurrency, "seconds": args.seconds, "load": generator,
        "check_rps": check["rps"], "floor_rps": floor["rps"], "ratio": round(ratio, 3),
        "check_p50_ms": check["p50_ms"], "check_p90_ms": check["p90_ms"], "check_p99_ms": check["p99_ms"],
        "floor_p50_ms": floor["p50_ms"], "floor_p99_ms": floor["p99_ms"],
        "check_errors": check["errors"], "floor_errors": floor["errors"],
        "customers": args.customers, "seed_seconds": seed_seconds, "spread_rps": spread["rps"], "spread_p50_ms": spread["p50_ms"],
        "spread_p99_ms": spread["p99_ms"], "spread_errors": spread["errors"], "spread_ratio": round(spread_ratio, 3),
        "server_cpu_us_per_check": check["cpu_us_per_request"], "server_cpu_us_per_spread_check":
            spread["cpu_us_per_request"], "spread_cpu_ratio": round(check["cpu_us_per_request"] /
                                                                    spread["cpu_us_per_request"], 3)
            if check["cpu_us_per_request"] and spread["cpu_us_per_request"] else None,
        "spread_context_hit_rate": hit_rate(before, after), "context_cache_size": after.get("size"),
        "targets": {"ratio>=0.6": ratio >= 0.6, "p99<=10ms": check["p99_ms"] <= 10.0,
                    "spread_ratio>=0.7": spread_ratio >= 0.7, "spread_p99<=10ms": spread["p99_ms"] <= 10.0}, **more,
    }))


if __name__ == "__main__":
    main()
