"""A mixed-load soak of `billing serve`: 16 clients for 60 s, then the ledger is checked.

    python bench/soak.py --backend both --seconds 60 --clients 16

Each client (a thread with its own keep-alive HTTP connection) loops over a random mix of
what apps do: ingest a new batch of events, replay an earlier batch (a retry after a lost
response: duplicates), check, reserve then commit, reserve then release, read usage. The
server is a real `billing serve` process on a fresh database (SQLite file or PostgreSQL).

Afterwards: no 5xx answer; every event acknowledged (accepted or duplicate, also through a
commit) is stored exactly once, and nothing else is; the counters and agent task usage equal
a recount of the stored events. Prints one JSON object: per backend operations/s, p50/p99
per operation in ms, the status counts and the checks; with ``--backend both`` also the
PostgreSQL/SQLite operations ratio. Targets (issue 11): zero 5xx, nothing lost or doubled,
PostgreSQL >= 0.5 x SQLite operations/s, no p99 above 250 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import fresh_database  # noqa: E402

PLANS = os.path.join(ROOT, "plans")
CUSTOMERS = [(f"soak-{i:02d}", "support-chatbot" if i % 2 else "token-api") for i in range(24)]
MIX = (("ingest", 30), ("replay", 10), ("check", 30), ("reserve_commit", 20), ("reserve_release", 5),
       ("usage", 5))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(url: str, log_path: str):
    """A `billing serve` process on a free port; yields its base URL."""
    import httpx

    port = _free_port()
    env = dict(os.environ, BILLING_DATABASE_URL=url, BILLING_PLANS_DIR=PLANS)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    env.pop("BILLING_WEBHOOK_URL", None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "billing", "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {open(log_path, errors='replace').read()[-3000:]}")
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def setup(url: str) -> str:
    """Customers and an admin key; returns the key."""
    from billing.api.auth import create_key
    from billing.catalog import Catalog
    from billing.ledger.accounts import Accounts
    from billing.store.db import make_engine

    engine = make_engine(url)
    accounts = Accounts(engine, Catalog.from_paths(PLANS))
    start = (datetime.now(UTC) - timedelta(days=40)).replace(microsecond=0)
    for customer, plan in CUSTOMERS:
        accounts.create_customer(customer, now=start)
        accounts.subscribe(customer, plan, at=start)
    key = create_key(engine, "admin")[1]
    engine.dispose()
    return key


class Client(threading.Thread):
    """One app: a keep-alive connection and a random mix of operations until ``stop``."""

    def __init__(self, n: int, base: str, key: str, stop: threading.Event, seed: int):
        super().__init__(name=f"soak-{n}", daemon=True)
        import httpx

        self.n = n
        self.http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        self.stop = stop
        self.rng = random.Random(seed)
        self.latency: dict[str, list[float]] = {op: [] for op, _ in MIX}
        self.statuses: dict[int, int] = {}
        self.server_errors: list[str] = []
        self.acknowledged: dict[tuple[str, str], str] = {}  # (customer, event id) -> how
        self.unknown: set[tuple[str, str]] = set()  # sent, answer lost (a timeout): stored or not
        self.batches: list[list[dict]] = []
        self.seq = 0
        self.error: BaseException | None = None

    def _post(self, path: str, body) -> tuple[int, dict]:
        r = self.http.post(path, json=body)
        self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
        if r.status_code >= 500:
            self.server_errors.append(f"{path} {r.status_code} {r.text[:300]}")
        return r.status_code, (r.json() if r.headers.get("content-type", "").startswith("application/json") else {})

    def _events(self, k: int) -> list[dict]:
        now = datetime.now(UTC)
        out = []
        for _ in range(k):
            self.seq += 1
            customer = self.rng.choice(CUSTOMERS)[0]
            props = {"model": "claude-sonnet-4-5", "input_tokens": self.rng.randrange(50, 3000),
                     "output_tokens": self.rng.randrange(10, 500), "feature": "support-chat"}
            if self.rng.random() < 0.2:
                props["task"] = f"task-{self.n}-{self.rng.randrange(20)}"
            ts = now - timedelta(seconds=self.rng.randrange(1, 3600))
            out.append({"id": f"c{self.n}-{self.seq}", "customer": customer, "type": "llm.call",
                        "timestamp": ts.isoformat().replace("+00:00", "Z"), "properties": props})
        return out

    def _ingest(self, batch: list[dict]) -> None:
        status, body = self._post("/v1/events", batch)
        if status == 200:
            for e, res in zip(batch, body["results"]):
                if res["status"] in ("accepted", "duplicate"):
                    self.acknowledged[(e["customer"], e["id"])] = res["status"]

    def op_ingest(self) -> None:
        batch = self._events(self.rng.randrange(1, 21))
        self.batches.append(batch)
        self._ingest(batch)

    def op_replay(self) -> None:
        if self.batches:
            self._ingest(self.rng.choice(self.batches))

    def op_check(self) -> None:
        customer, plan = self.rng.choice(CUSTOMERS)
        self._post("/v1/quota/check", {"customer": customer, "meter": "messages" if plan == "support-chatbot"
                                       else "llm_calls"})

    def _reserve(self) -> tuple[str, str] | None:
        customer, plan = self.rng.choice(CUSTOMERS)
        status, body = self._post("/v1/quota/reserve", {
            "customer": customer, "meter": "messages" if plan == "support-chatbot" else "llm_calls",
            "ttl_seconds": 30})
        if status == 200 and body.get("reservation_id"):
            return customer, body["reservation_id"]
        return None

    def op_reserve_commit(self) -> None:
        held = self._reserve()
        if held is None:
            return
        customer, rid = held
        status, body = self._post("/v1/quota/commit", {"reservation_id": rid, "event": {
            "type": "llm.call", "properties": {"model": "claude-sonnet-4-5", "input_tokens": 100,
                                               "output_tokens": 20, "feature": "support-chat"}}})
        if status == 200:
            self.acknowledged[(customer, body["event_id"])] = "commit"

    def op_reserve_release(self) -> None:
        held = self._reserve()
        if held is not None:
            self._post("/v1/quota/release", {"reservation_id": held[1]})

    def op_usage(self) -> None:
        r = self.http.get(f"/v1/customers/{self.rng.choice(CUSTOMERS)[0]}/usage")
        self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
        if r.status_code >= 500:
            self.server_errors.append(f"usage {r.status_code} {r.text[:300]}")

    def run(self) -> None:
        import httpx

        ops = [op for op, _ in MIX]
        weights = [w for _, w in MIX]
        try:
            while not self.stop.is_set():
                op = self.rng.choices(ops, weights)[0]
                t0 = time.perf_counter()
                try:
                    getattr(self, f"op_{op}")()
                except httpx.TimeoutException:
                    self.statuses[-1] = self.statuses.get(-1, 0) + 1  # -1: no answer in time
                    if op in ("ingest", "replay") and self.batches:
                        self.unknown.update((e["customer"], e["id"]) for e in self.batches[-1])
                self.latency[op].append(time.perf_counter() - t0)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
        finally:
            self.http.close()


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2)


def verify(url: str, clients: list[Client]) -> dict:
    """Every acknowledged event stored once and nothing else; counters and task usage equal a
    recount."""
    from billing.catalog import Catalog
    from billing.store.db import make_engine
    from billing.ledger.recount import recount_all

    engine = make_engine(url)
    catalog = Catalog.from_paths(PLANS)

    def derived() -> tuple:
        with engine.connect() as conn:
            counters = sorted(tuple(r) for r in conn.exec_driver_sql(
                "SELECT customer_id, meter, period_start, units_micro, units_carry, events, cost_pico, cost_carry "
                "FROM usage_counter").all())
            tasks = sorted(tuple(r) for r in conn.exec_driver_sql(
                "SELECT customer_id, task_id, steps, tokens, tokens_carry, cost_pico, cost_carry "
                "FROM agent_task_usage").all())
        return counters, tasks

    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT customer_id, event_id FROM usage_event").all()
    stored = [(c, e) for c, e in rows]
    acknowledged: set[tuple[str, str]] = set()
    unknown: set[tuple[str, str]] = set()
    for c in clients:
        acknowledged |= set(c.acknowledged)
        unknown |= c.unknown
    stored_set = set(stored)
    before = derived()
    with engine.begin() as conn:
        recount_all(conn, catalog)
    after = derived()
    engine.dispose()
    return {"stored_events": len(stored), "acknowledged": len(acknowledged),
            "lost": len(acknowledged - stored_set), "doubled": len(stored) - len(stored_set),
            "unexpected": len(stored_set - acknowledged - unknown),
            "counters_equal_recount": before[0] == after[0], "tasks_equal_recount": before[1] == after[1]}


def soak(backend: str, seconds: float = 60, clients: int = 16, seed: int = 1) -> dict:
    with fresh_database(backend) as url, tempfile.TemporaryDirectory() as tmp:
        key = setup(url)
        with server(url, os.path.join(tmp, "server.log")) as base:
            stop = threading.Event()
            workers = [Client(n, base, key, stop, seed * 1000 + n) for n in range(clients)]
            t0 = time.perf_counter()
            for w in workers:
                w.start()
            time.sleep(seconds)
            stop.set()
            for w in workers:
                w.join(60)
            elapsed = time.perf_counter() - t0
        checks = verify(url, workers)
    errors = [str(w.error) for w in workers if w.error is not None]
    latency = {op: sum((w.latency[op] for w in workers), []) for op, _ in MIX}
    statuses: dict[str, int] = {}
    for w in workers:
        for code, n in w.statuses.items():
            statuses[str(code)] = statuses.get(str(code), 0) + n
    total = sum(len(v) for v in latency.values())
    return {"backend": backend, "seconds": round(elapsed, 1), "clients": clients, "operations": total,
            "ops_per_s": round(total / elapsed, 1),
            "per_op": {op: {"n": len(v), "p50_ms": _pct(v, 0.5), "p99_ms": _pct(v, 0.99)}
                       for op, v in latency.items()},
            "statuses": statuses, "server_errors": sum((w.server_errors for w in workers), [])[:20],
            "client_errors": errors[:5], "checks": checks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    runs = {b: soak(b, args.seconds, args.clients, args.seed) for b in backends}
    out: dict = {"runs": runs}
    if len(runs) == 2:
        out["postgres_to_sqlite_ops"] = round(runs["postgres"]["ops_per_s"] / runs["sqlite"]["ops_per_s"], 3)
    out["max_p99_ms"] = max((p["p99_ms"] or 0) for r in runs.values() for p in r["per_op"].values())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
