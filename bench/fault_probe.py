"""Fault probe: two `billing serve` processes on ONE PostgreSQL database, for a minute:

    python bench/fault_probe.py --seconds 60 --clients 8

- clients (threads, each with a keep-alive connection to EACH server) send a random mix to
  either server: new batches (some events of agent tasks all clients share, some dated in the previous,
  closed period: late events), replays of earlier batches to the other server (the same ids
  racing through two processes), reserve + commit (with and without a task), reserve +
  release, checks;
- meanwhile `billing db recount` runs again and again (rebuilding every counter and all
  task usage while ingestion goes on), and `billing invoice close --as-of now` too (its
  snapshot lock against in-flight writers).

Afterwards: no 5xx, no client error, every acknowledged event stored exactly once and
nothing else (events whose answer was lost may be stored or not), counters and agent task
usage equal a recount, every recount and close exited 0, the invoices of the first close
unchanged at the end, and the deadlocks PostgreSQL detected in the database (each one a
transaction run again) reported. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import fresh_database  # noqa: E402
from bench.soak import CUSTOMERS, PLANS, Client, server, setup, verify  # noqa: E402

MIX = (("ingest", 30), ("replay", 15), ("late", 5), ("reserve_commit", 25), ("reserve_release", 5), ("check", 20))


class ProbeClient(Client):
    """A soak client whose every request goes to one of the servers at random."""

    def __init__(self, n: int, bases: list[str], key: str, stop: threading.Event, seed: int):
        super().__init__(n, bases[0], key, stop, seed)
        import httpx

        self.http.close()
        self.https = [httpx.Client(base_url=b, headers={"Authorization": f"Bearer {key}"}, timeout=60) for b in bases]
        self.latency = {op: [] for op, _ in MIX}

    def _post(self, path: str, body) -> tuple[int, dict]:
        self.http = self.rng.choice(self.https)
        return super()._post(path, body)

    def _events(self, k: int) -> list[dict]:
        out = super()._events(k)
        for e in out:  # the tasks all clients share (ingestion and commits of one task race)
            if "task" in e["properties"]:
                e["properties"]["task"] = f"task-{self.rng.randrange(4)}"
        return out

    def op_late(self) -> None:
        """Events of the previous month (closed by the first close: late events)."""
        batch = self._events(self.rng.randrange(1, 6))
        for e in batch:
            e["timestamp"] = (datetime.now(UTC) - timedelta(days=self.rng.randrange(32, 38))).isoformat().replace(
                "+00:00", "Z")
        self.batches.append(batch)
        self._ingest(batch)

    def op_reserve_commit(self) -> None:
        customer, plan = self.rng.choice(CUSTOMERS)
        task = f"task-{self.rng.randrange(4)}" if self.rng.random() < 0.5 else None
        body = {"customer": customer, "meter": "messages" if plan == "support-chatbot" else "llm_calls",
                "ttl_seconds": 60}
        if task:
            body["task"] = task
        status, out = self._post("/v1/quota/reserve", body)
        if status != 200 or not out.get("reservation_id"):
            return
        props = {"model": "claude-sonnet-4-5", "input_tokens": 100, "output_tokens": 20, "feature": "support-chat"}
        if task and self.rng.random() < 0.5:
            props["task"] = task  # else the commit names the hold's task
        status, out = self._post("/v1/quota/commit", {"reservation_id": out["reservation_id"],
                                                      "event": {"type": "llm.call", "properties": props}})
        if status == 200:
            self.acknowledged[(customer, out["event_id"])] = "commit"

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
                    self.statuses[-1] = self.statuses.get(-1, 0) + 1
                    if op in ("ingest", "replay", "late") and self.batches:
                        self.unknown.update((e["customer"], e["id"]) for e in self.batches[-1])
                self.latency[op].append(time.perf_counter() - t0)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
        finally:
            for h in self.https:
                h.close()


def _cli_loop(url: str, args: list[str], stop: threading.Event, pause: float, runs: list) -> None:
    """Run `billing ARGS` again and again until ``stop`` (each run's exit code and stderr tail)."""
    env = dict(os.environ, BILLING_DATABASE_URL=url, BILLING_PLANS_DIR=PLANS)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    while not stop.is_set():
        argv = [a.replace("{now}", datetime.now(UTC).isoformat()) for a in args]
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "billing", *argv], env=env, capture_output=True, text=True,
                              timeout=300)
        runs.append({"code": proc.returncode, "seconds": round(time.perf_counter() - t0, 2),
                     "stderr": proc.stderr[-500:] if proc.returncode else ""})
        stop.wait(pause)


def _invoices(url: str) -> list[tuple]:
    from billing.store.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(tuple(r) for r in conn.exec_driver_sql(
                "SELECT id, number, status, total_minor FROM invoice").all())
    finally:
        engine.dispose()


def _deadlocks(url: str) -> int:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(u.set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as conn:
        return conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]


def probe(seconds: float, clients: int, seed: int) -> dict:
    with fresh_database("postgres") as url, tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        key = setup(url)
        first_close = subprocess.run(
            [sys.executable, "-m", "billing", "invoice", "close", "--as-of", datetime.now(UTC).isoformat(), "--json"],
            env=dict(os.environ, BILLING_DATABASE_URL=url, BILLING_PLANS_DIR=PLANS,
                     PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)),
            capture_output=True, text=True, timeout=300)
        assert first_close.returncode == 0, first_close.stderr
        invoices_before = _invoices(url)
        bases = [stack.enter_context(server(url, os.path.join(tmp, f"server{i}.log"))) for i in range(2)]
        deadlocks_before = _deadlocks(url)
        stop = threading.Event()
        workers = [ProbeClient(n, bases, key, stop, seed * 1000 + n) for n in range(clients)]
        recounts: list[dict] = []
        closes: list[dict] = []
        jobs = [threading.Thread(target=_cli_loop, args=(url, ["db", "recount", "--json"], stop, 2.0, recounts)),
                threading.Thread(target=_cli_loop, args=(url, ["invoice", "close", "--as-of", "{now}", "--json"],
                                                         stop, 2.0, closes))]
        t0 = time.perf_counter()
        for t in [*workers, *jobs]:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in [*workers, *jobs]:
            t.join(300)
        elapsed = time.perf_counter() - t0
        stack.close()  # the servers stop (their statistics reach pg_stat_database)
        time.sleep(1.5)
        deadlocks = _deadlocks(url) - deadlocks_before
        checks = verify(url, workers)
        invoices_after = _invoices(url)
        logs = {i: open(os.path.join(tmp, f"server{i}.log"), errors="replace").read()[-3000:] for i in range(2)}
    statuses: dict[str, int] = {}
    for w in workers:
        for code, n in w.statuses.items():
            statuses[str(code)] = statuses.get(str(code), 0) + n
    ops = {op: sum(len(w.latency[op]) for w in workers) for op, _ in MIX}
    finalized_before = [i for i in invoices_before if i[2] != "draft"]
    return {"seconds": round(elapsed, 1), "clients": clients, "operations": ops, "statuses": statuses,
            "server_errors": sum((w.server_errors for w in workers), [])[:10],
            "client_errors": [str(w.error) for w in workers if w.error is not None][:5],
            "recounts": {"runs": len(recounts), "failed": [r for r in recounts if r["code"]][:3],
                         "max_seconds": max((r["seconds"] for r in recounts), default=None)},
            "closes": {"runs": len(closes), "failed": [r for r in closes if r["code"]][:3]},
            "first_close_invoices": len(invoices_before),
            "finalized_invoices_unchanged": all(i in invoices_after for i in finalized_before),
            "deadlocks_detected": deadlocks, "checks": checks,
            "server_log_tracebacks": {i: "Traceback" in text for i, text in logs.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(probe(args.seconds, args.clients, args.seed)))


if __name__ == "__main__":
    main()
