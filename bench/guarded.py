"""What an app pays per LLM call: ``guarded_call`` over HTTP around a stub LLM that answers
at once, against calling the stub alone.

    python bench/guarded.py [--backend sqlite|postgres] [--seconds 5] [--callers 16]
                            [--customers 200] [--rate 0]

A real ``billing serve`` process (one worker) on a fresh migrated database seeded with
``--customers`` customers on the support-chatbot plan; in another process (the app),
``--callers`` threads sharing one ``HttpClient`` (its keep-alive connections to the
``http://`` service: ``billing.client.wire``) with ``background_commits=True`` (each
call's commits appended to the spool's journal with one write, then fsynced once for many
calls and sent by background threads; ``--sync-commits``: the caller writes and fsyncs a
spool file per commit and sends it itself, as without the option) each call, in a loop,
``guarded_call(client, customer, "messages", stub, ...)`` for customers taken in turn; the
stub returns an Anthropic-shaped response with usage at once. The same threads first call
the stub alone. The added time of a call is its time minus the stub-alone median.

``--rate R`` (calls/s over all callers, 0 = as fast as they can): paces the callers, as an
app whose real LLM calls take time would; at 0 the figure includes queueing behind the
other callers on the 2 cores the server, the database and the app share.

Prints one JSON object: ``calls_per_s``, ``added_p50_ms``, ``added_p90_ms``,
``added_p99_ms``, ``stub_p50_us``, the CPU each call costs the app (``client_cpu_us_per_call``)
and the server (``server_cpu_us_per_call``, over the measured calls only: the CPU time a loaded machine
changes least), the calls that did not record (denied, spooled, refused,
errors: all expected 0); with background commits, after the run the client drains them
(``drain_s``) and ``background`` counts the commits delivered, kept and refused
(``not_recorded`` counts every commit not delivered). Targets: added p50 <= 2 ms and p99 <= 5 ms on SQLite; p99 <= 10 ms on
PostgreSQL.
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
from datetime import UTC, datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PLANS = os.path.join(ROOT, "plans")
RESPONSE = {"type": "message", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 2100, "output_tokens": 400}}
TARGETS = {"sqlite": {"added_p50_ms": 2.0, "added_p99_ms": 5.0}, "postgres": {"added_p99_ms": 10.0}}


def stub(model):
    return RESPONSE


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))] if values else 0.0


def drive(callers: int, seconds: float, rate: float, call) -> tuple[list[float], float, list]:
    """Each of ``callers`` threads runs ``call(i)`` in a loop for ``seconds`` (at most ``rate``
    calls/s over all of them when > 0): (sorted durations, elapsed, the outcomes)."""
    durations: list[float] = []
    outcomes: list = []
    lock = threading.Lock()
    gap = callers / rate if rate > 0 else 0.0
    start = time.perf_counter()
    until = start + seconds

    def run(k: int) -> None:
        mine, theirs, i, due = [], [], k, start + gap * k / callers
        while True:
            if gap:
                due += gap
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            t0 = time.perf_counter()
            if t0 >= until:
                break
            theirs.append(call(i))
            mine.append(time.perf_counter() - t0)
            i += callers
        with lock:
            durations.extend(mine)
            outcomes.extend(theirs)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    durations.sort()
    return durations, time.perf_counter() - start, outcomes


def callers_process(base_url: str, key: str, customers: int, callers: int, seconds: float, rate: float,
                    server_pid: int | None = None, background: bool = True) -> dict:
    """The app: stub alone, then guarded calls (after a one-second warm-up)."""
    from billing.client import HttpClient, QuotaDenied, guarded_call

    stub_alone, _, _ = drive(callers, min(seconds, 1.0), rate, lambda i: stub(None))
    with tempfile.TemporaryDirectory() as spool, HttpClient(base_url, key, spool_dir=spool,
                                                           background_commits=background) as client:
        queued: list[int] = []  # commits handed to the background, per call

        def call(i: int):
            try:
                result = guarded_call(client, f"cust-{i % customers:05d}", "messages", stub,
                                      model="claude-sonnet-4-5", properties={"feature": "support-chat"})
            except QuotaDenied:
                return "denied"
            except Exception as exc:  # noqa: BLE001 - counted, reported
                return f"error: {type(exc).__name__}: {exc}"[:200]
            if result.recorded or (background and result.queued == len(result.commits)):
                queued.append(result.queued)
                return "recorded"
            return f"not recorded: {result.commits}"[:200]

        # warm-up: connections, and each customer's metering, which the client caches (METERING_TTL)
        warm = [call(i) for i in range(customers)]
        cpu, server_cpu = time.process_time(), cpu_seconds(server_pid) if server_pid else 0.0
        durations, elapsed, outcomes = drive(callers, seconds, rate, call)
        drain = time.perf_counter()
        drained = client.drain(120)  # the background commits: delivered before the CPU is read
        drain = time.perf_counter() - drain
        cpu = time.process_time() - cpu
        server_cpu = cpu_seconds(server_pid) - server_cpu if server_pid else None
        counts = client.background_counts()
        sent = sum(queued)
    base = pct(stub_alone, 0.5)
    problems = [o for o in outcomes if o != "recorded"]
    if background and (not drained or counts["delivered"] != sent):
        problems.append(f"background: {counts} of {sent} commits, drained={drained}")

    def added(p: float) -> float:
        return round(max(0.0, pct(durations, p) - base) * 1000, 3)

    return {"calls": len(durations), "calls_per_s": round(len(durations) / elapsed, 1),
            "added_p50_ms": added(0.5), "added_p90_ms": added(0.9), "added_p99_ms": added(0.99),
            "added_max_ms": added(1.0), "stub_p50_us": round(base * 1e6, 2), "stub_p99_us": round(pct(stub_alone, 0.99) * 1e6, 2),
            "client_cpu_us_per_call": round(cpu / max(1, len(durations)) * 1e6),
            "server_cpu_us_per_call": None if server_cpu is None else round(server_cpu / max(1, len(durations)) * 1e6),
            "warmup_calls": len(warm), "commits": "background" if background else "in the call",
            "drain_s": round(drain, 3), "background": counts if background else None,
            "not_recorded": len(problems), "problems": sorted(set(problems))[:5]}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_serve(url: str, port: int) -> subprocess.Popen:
    import socket

    env = {**os.environ, "BILLING_DATABASE_URL": url, "BILLING_PLANS_DIR": PLANS,
           "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "billing", "serve", "--port", str(port), "--log-level", "warning"],
                            env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"billing serve exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("billing serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=0.0, help="calls/s over all callers (0: unpaced)")
    parser.add_argument("--sync-commits", action="store_true",
                        help="each caller writes, fsyncs and sends its commits itself (no background commits)")
    parser.add_argument("--callers-process", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.callers_process:
        base_url, key, server_pid = json.loads(args.callers_process)
        print(json.dumps(callers_process(base_url, key, args.customers, args.callers, args.seconds, args.rate,
                                         server_pid, background=not args.sync_commits)))
        return
    if args.callers < 1 or args.customers < 1 or args.seconds <= 0 or args.rate < 0:
        parser.error("--callers, --customers and --seconds must be positive, --rate >= 0")

    from bench.check import free_port, seed
    from bench.common import fresh_database

    with fresh_database(args.backend) as url:
        key = seed(url, args.customers, datetime.now(UTC))
        port = free_port()
        server = start_serve(url, port)
        try:
            argv = [sys.executable, __file__, "--callers-process", json.dumps([f"http://127.0.0.1:{port}", key, server.pid]),
                    "--customers", str(args.customers), "--callers", str(args.callers),
                    "--seconds", str(args.seconds), "--rate", str(args.rate), *(["--sync-commits"] * args.sync_commits)]
            out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
            if out.returncode:
                raise SystemExit(f"callers process failed: {out.stderr[-2000:]}")
            result = json.loads(out.stdout)
        finally:
            server.terminate()
            server.wait(10)
    targets = {f"{k}<={v}": result[k] <= v for k, v in TARGETS[args.backend].items()}
    print(json.dumps({"backend": args.backend, "callers": args.callers, "seconds": args.seconds, "rate": args.rate,
                      **result, "targets": targets, "met": all(targets.values()) and not result["not_recorded"]}))


if __name__ == "__main__":
    main()
