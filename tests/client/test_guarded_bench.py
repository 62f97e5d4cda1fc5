"""bench/guarded.py (issue 17) at a tiny size on both databases: guarded_call over HTTP
against a real ``billing serve``, every call recorded. Its targets are measured at full size
(README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.db import PLANS_DIR, postgres_server_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("rate", ["0", "40"])
def test_guarded_benchmark_records_every_call(backend, rate):
    if backend == "postgres":
        postgres_server_url()  # skipped without PostgreSQL, failed when it is required
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "guarded.py"), "--backend", backend, "--seconds", "1",
                          "--customers", "20", "--callers", "4", "--rate", rate],
                         capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, BILLING_PLANS_DIR=str(PLANS_DIR)))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["calls"] > 0 and result["not_recorded"] == 0, result
    assert 0 <= result["added_p50_ms"] <= result["added_p99_ms"] <= result["added_max_ms"]
    if rate != "0":  # paced: at most the rate (with a warm-up second apart)
        assert result["calls_per_s"] <= float(rate) * 1.5
