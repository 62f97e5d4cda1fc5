"""`billing serve` as a child process (the console script of the venv) on a free port, and
the wait for its /healthz: the two-server and idempotency-across-servers tests share it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _billing_command() -> list[str]:
    """The venv's `billing` console script (next to sys.executable), else the CLI via -c."""
    script = Path(sys.executable).parent / "billing"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from billing.cli import app; app()"]


@contextmanager
def _server(url: str, plans_dir: Path, log_path: Path):
    """One `billing serve` process on a free port; yields its base URL, killed after."""
    port = _free_port()
    env = {**os.environ, "BILLING_DATABASE_URL": url, "BILLING_PLANS_DIR": str(plans_dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("BILLING_WEBHOOK_URL", None)
    env.pop("BILLING_WEBHOOK_SECRET", None)
    log = open(log_path, "wb")
    proc = subprocess.Popen([*_billing_command(), "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "warning"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _wait_healthy(proc: subprocess.Popen, base: str, log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server {base} exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"server {base} did not answer /healthz within {timeout:g}s:\n"
                f"{log_path.read_text(errors='replace')}")
