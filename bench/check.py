"""Quota check latency and throughput over HTTP, against a trivial endpoint of the same app,
plus in-process checks per second.

    python bench/check.py --backend sqlite|postgres [--seconds 5] [--concurrency 16] [--customers 200]

Starts ``billing serve``'s app (uvicorn, one worker) on a fresh migrated database seeded
with customers on the support-chatbot plan (some usage each), then runs a separate load
process (a minimal keep-alive HTTP/1.1 client on asyncio, ``--concurrency`` connections)
against ``GET /healthz`` (the trivial endpoint) and ``POST /v1/quota/check``. Prints one
JSON object: requests/s of both, ``ratio`` (check / trivial), check latency percentiles
(ms), and in-process ``Quota.check`` calls per second. Targets: ratio >= 0.6, p99 <= 10 ms
at 16 connections; in-process >= 20,000 checks/s on SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PLANS = os.path.join(ROOT, "plans")


# ------------------------------------------------------------------ load process

async def _worker(host: str, port: int, request: bytes, until: float, latencies: list[float], errors: list[int]):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < until:
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


def load(host: str, port: int, method: str, path: str, body: str, key: str, seconds: float,
         concurrency: int) -> dict:
    payload = body.encode()
    request = (f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload
    latencies: list[float] = []
    errors: list[int] = []

    async def main():
        until = time.perf_counter() + seconds
        await asyncio.gather(*[_worker(host, port, request, until, latencies, errors) for _ in range(concurrency)])

    start = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 3) if latencies else 0.0

    return {"requests": len(latencies), "rps": round(len(latencies) / elapsed, 1), "errors": len(errors),
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0)}


def run_load(port: int, method: str, path: str, body: str, key: str, seconds: float, concurrency: int) -> dict:
    """The load generator runs in a separate process (it must not share the server's CPU slot)."""
    args = json.dumps([port, method, path, body, key, seconds, concurrency])
    out = subprocess.run([sys.executable, __file__, "--load", args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


# ------------------------------------------------------------------------- setup

def seed(url: str, customers: int, now: datetime) -> str:
    from sqlmodel import SQLModel

    import billing.ledger.quota_models  # noqa: F401
    from billing.api.auth import create_key
    from billing.catalog import Catalog
    from billing.ledger.accounts import Accounts
    from billing.ledger.db import make_engine
    from billing.ledger.ingest import Ledger

    engine = make_engine(url)
    SQLModel.metadata.create_all(engine)
    catalog = Catalog.from_paths(PLANS)
    acc = Accounts(engine, catalog)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    events = []
    for i in range(customers):
        cid = f"cust-{i:05d}"
        acc.create_customer(cid, now=start)
        acc.subscribe(cid, "support-chatbot", at=start)
        for j in range(i % 50):
            events.append({"id": f"e-{i}-{j}", "customer": cid, "type": "llm.call",
                           "timestamp": (now - timedelta(minutes=j + 1)).isoformat(),
                           "properties": {"feature": "support-chat", "model": "claude-sonnet-4-5",
                                          "input_tokens": 2100, "output_tokens": 400}})
    Ledger(engine, catalog).record(events)
    _, key = create_key(engine, "check")
    engine.dispose()
    return key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(url: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "BILLING_DATABASE_URL": url, "BILLING_PLANS_DIR": PLANS, "PYTHONPATH": ROOT}
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


def in_process(url: str, customers: int, seconds: float) -> float:
    from billing.catalog import Catalog
    from billing.ledger.db import make_engine
    from billing.ledger.holds import Quota

    engine = make_engine(url)
    quota = Quota(engine, Catalog.from_paths(PLANS), context_ttl=5.0)
    ids = [f"cust-{i:05d}" for i in range(customers)]
    for cid in ids:
        quota.check(cid, "messages")  # warm the context cache
    n = 0
    start = time.perf_counter()
    until = start + seconds
    while time.perf_counter() < until:
        for cid in ids:
            quota.check(cid, "messages")
        n += len(ids)
    rate = n / (time.perf_counter() - start)
    engine.dispose()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        port, method, path, body, key, seconds, concurrency = json.loads(args.load)
        print(json.dumps(load("127.0.0.1", port, method, path, body, key, seconds, concurrency)))
        return

    from bench.common import fresh_database

    now = datetime.now(UTC)
    with fresh_database(args.backend) as url:
        key = seed(url, args.customers, now)
        port = free_port()
        server = start_server(url, port)
        try:
            body = json.dumps({"customer": "cust-00042", "meter": "messages"})
            run_load(port, "POST", "/v1/quota/check", body, key, 1.0, args.concurrency)  # warm-up
            run_load(port, "GET", "/healthz", "", key, 1.0, args.concurrency)
            trivial = run_load(port, "GET", "/healthz", "", key, args.seconds, args.concurrency)
            check = run_load(port, "POST", "/v1/quota/check", body, key, args.seconds, args.concurrency)
        finally:
            server.terminate()
            server.wait(10)
        local = in_process(url, args.customers, min(args.seconds, 3.0))
    ratio = check["rps"] / trivial["rps"] if trivial["rps"] else 0.0
    print(json.dumps({
        "backend": args.backend, "concurrency": args.concurrency, "seconds": args.seconds,
        "trivial_rps": trivial["rps"], "check_rps": check["rps"], "ratio": round(ratio, 3),
        "check_p50_ms": check["p50_ms"], "check_p90_ms": check["p90_ms"], "check_p99_ms": check["p99_ms"],
        "trivial_p99_ms": trivial["p99_ms"], "check_errors": check["errors"],
        "inprocess_checks_per_s": round(local, 1),
        "targets": {"ratio>=0.6": ratio >= 0.6, "p99<=10ms": check["p99_ms"] <= 10.0,
                    "inprocess>=20000/s": local >= 20_000 if args.backend == "sqlite" else None},
    }))


if __name__ == "__main__":
    main()
