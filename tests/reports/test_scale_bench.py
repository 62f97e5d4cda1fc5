"""bench/scale.py (issue 17) at a tiny size on both databases, so CI keeps it working: every
step runs as the CLI process users run, with its time and peak memory; ``--keep-dir`` reuses
the files, the database and the ingest/close figures. Its targets are measured at 1M/10M
events (see the README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.db import PLANS_DIR, postgres_server_url

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench import scale  # noqa: E402

STEPS = ("ingest", "close", "margins", "by", "forecast", "simulate")


def run_scale(*args: str) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), *args], capture_output=True, text=True,
                         timeout=900, env=dict(os.environ, BILLING_PLANS_DIR=str(PLANS_DIR)))
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    result = json.loads(out.stdout)
    assert {(line["events"], line["step"]) for line in lines} >= {
        (size["events"], step) for size in result["sizes"] for step in (*scale.REPORT_STEPS, "floor")}
    return result


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_scale_benchmark_runs_at_a_tiny_size(backend, tmp_path):
    if backend == "postgres":
        postgres_server_url()  # skipped without PostgreSQL, failed when it is required
    keep = ["--keep-dir", str(tmp_path)] if backend == "sqlite" else []
    result = run_scale("--backend", backend, "--sizes", "1200", "2400", "--customers", "30", *keep)
    assert [s["events"] for s in result["sizes"]] == [1200, 2400]
    for size in result["sizes"]:
        assert set(size["steps"]) == set(STEPS)
        for step in size["steps"].values():
            assert step["seconds"] > 0 and 0 < step["own_rss_mb"] <= step["peak_rss_mb"]
        assert size["floor"]["over"] == "usage_event" or "rollup" in size["floor"]["over"]
    targets = result["targets"]
    assert set(targets) == {f"{s}_rss_growth" for s in scale.REPORT_STEPS} | {"margins_over_floor"}
    assert result["met"] == all(t["met"] for t in targets.values())
    if backend == "sqlite":  # again: the kept database and figures, the reports measured anew
        again = run_scale("--backend", backend, "--sizes", "1200", "--customers", "30", *keep)
        (size,) = again["sizes"]
        assert size["steps"]["ingest"] == {**result["sizes"][0]["steps"]["ingest"], "reused": True}
        assert not any(size["steps"][s].get("reused") for s in scale.REPORT_STEPS)
        assert "margins_rss_growth" not in again["targets"]  # one size: no growth to check


def test_events_file_is_what_the_import_reads(tmp_path):
    """The generator's lines are events the ledger accepts: valid JSON, ids unique, October
    2026 in time order, round robin over the customers."""
    path = str(tmp_path / "e.jsonl")
    scale.write_events(path, 500, 7)
    lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert len(lines) == 500 and len({e["id"] for e in lines}) == 500
    assert [e["customer"] for e in lines[:8]] == [scale.customer_id(i % 7, 7) for i in range(8)]
    stamps = [e["timestamp"] for e in lines]
    assert stamps == sorted(stamps) and stamps[0].startswith("2026-10-01") and stamps[-1] < "2026-11-01"
    assert all(e["type"] == "llm.call" and e["properties"]["input_tokens"] > 0 for e in lines)


def test_floor_reads_the_rollups_when_the_schema_has_them(tmp_path):
    """Over the events (labelled) without a rollup table; over the rollups with one."""
    from sqlalchemy import create_engine, text

    url = f"sqlite:///{tmp_path / 'x.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE usage_event (id INTEGER PRIMARY KEY, customer_id TEXT, cost_pico INTEGER)"))
    assert scale.floor_query(url)[0] == "usage_event"
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE rollup_dimension (name TEXT)"))  # sorts first: not the one to read
        conn.execute(text("CREATE TABLE usage_rollup (customer_id TEXT, hour INTEGER, events INTEGER, "
                          "cost_pico INTEGER)"))
        conn.execute(text("INSERT INTO usage_rollup VALUES ('a', 1, 2, 30), ('a', 2, 1, 5), ('b', 1, 4, 7)"))
    engine.dispose()
    table, sql = scale.floor_query(url)
    assert table == "usage_rollup"
    out = subprocess.run(scale.floor_argv(url, sql + " ORDER BY 1"), capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["a|3|35", "b|4|7"]
