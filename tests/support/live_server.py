"""Real HTTP servers for tests that need a socket (holds no tests itself).

- ``billing_serve``: a `billing serve` subprocess (the production entry point, the venv's
  console script) on a free port; ``wait_healthy``: the wait for its /healthz.
- ``uvicorn_thread``: an app object (built in the test, e.g. with a route that fails on
  purpose) served by uvicorn in a thread of the test process.
- ``raw_request``: one request written on a raw socket, body streamed while a reader thread
  waits for the answer (a server may answer and close before the body is sent).
- ``rss_kib`` / ``peak_rss_kib``: a process's resident memory now and at its peak.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen | None = None, log_path: Path | None = None,
                 timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"server {base} exited with {proc.returncode}:\n"
                        f"{log_path.read_text(errors='replace') if log_path else ''}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server {base} did not answer /healthz within {timeout:g}s:\n"
                f"{log_path.read_text(errors='replace') if log_path else ''}")


@contextmanager
def billing_serve(url: str, plans_dir: Path, log_path: Path, env: dict | None = None, *, wait: bool = True
                  ) -> Iterator[tuple[subprocess.Popen, str]]:
    """A `billing serve` process on ``url``; yields (process, base URL) once it is healthy
    (``wait=False``: at once, so several servers start side by side; then ``wait_healthy``)."""
    port = free_port()
    full_env = {**os.environ, "BILLING_DATABASE_URL": url, "BILLING_PLANS_DIR": str(plans_dir),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                **(env or {})}
    full_env.pop("BILLING_WEBHOOK_URL", None)
    full_env.pop("BILLING_WEBHOOK_SECRET", None)
    script = Path(sys.executable).parent / "billing"
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from billing.cli import app; app()"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*command, "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--log-level", "warning"], env=full_env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            if wait:
                wait_healthy(base, proc, log_path)
            yield proc, base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def serve_side_by_side(stack, url: str, plans_dir: Path, tmp_path: Path, key: str, n: int = 2,
                       max_connections: int = 32) -> tuple[list[tuple[subprocess.Popen, str, Path]], list[httpx.Client]]:
    """``n`` `billing serve` processes on one database, started side by side and waited for,
    and an authenticated client for each (all closed with ``stack``): (servers, clients),
    each server as (process, base URL, log path)."""
    servers = []
    for i in range(n):
        log_path = tmp_path / f"server{i}.log"
        proc, base = stack.enter_context(billing_serve(url, plans_dir, log_path, wait=False))
        servers.append((proc, base, log_path))
    for proc, base, log_path in servers:
        wait_healthy(base, proc, log_path)
    headers = {"Authorization": f"Bearer {key}"}
    clients = [stack.enter_context(httpx.Client(base_url=base, headers=headers, timeout=60.0,
                                                limits=httpx.Limits(max_connections=max_connections)))
               for _, base, _ in servers]
    return servers, clients


@contextmanager
def uvicorn_thread(app) -> Iterator[str]:
    """``app`` served by uvicorn (httptools, as `billing serve`) in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           http="httptools", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base)
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


def raw_request(port: int, head: bytes, body_chunks=(), *, timeout: float = 30.0) -> tuple[bytes, int]:
    """Write ``head`` then each of ``body_chunks`` on a new connection while a reader thread
    collects the answer; stop sending when the server closes. Returns (the answer's bytes,
    body bytes the server let us send)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    answer = bytearray()
    done = threading.Event()

    def read() -> None:
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                answer.extend(data)
                if b"\r\n\r\n" in answer and _complete(answer):
                    break
        except OSError:
            pass
        finally:
            done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sent = 0
    try:
        sock.sendall(head)
        for chunk in body_chunks:
            if done.is_set():
                break
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:  # the server answered and closed: what we send now goes nowhere
        pass
    done.wait(timeout)
    sock.close()
    return bytes(answer), sent


def _complete(answer: bytearray) -> bool:
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmHWM")
