"""bench/rollup_layout.py (issue 17) at a tiny size, so CI keeps it working: every layout of
``usage_rollup`` it compares holds the same rows, and those are the rows the ingestion path
writes into the real table (same totals), so its CPU figures compare like with like."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench import rollup_layout  # noqa: E402
from bench.ingest import make_events  # noqa: E402


def test_layouts_write_the_same_rows_as_the_planner(tmp_path):
    events = make_events(3000, 7)
    chunks = rollup_layout.chunk_rows(events)
    counts = {layout: rollup_layout.write(str(tmp_path / f"{layout}.db"), layout, chunks, layout.startswith("hour"))[1]
              for layout in rollup_layout.LAYOUTS}
    assert len(set(counts.values())) == 1, counts
    import sqlite3
    conn = sqlite3.connect(str(tmp_path / "schema.db"))
    n, tokens = conn.execute("SELECT SUM(events), SUM(input_tokens) FROM usage_rollup").fetchone()
    assert n == 3000 and tokens == sum(e["properties"]["input_tokens"] for e in events)
    hours = {int(datetime.fromisoformat(e["timestamp"]).timestamp()) // 3600 for e in events}
    assert conn.execute("SELECT COUNT(DISTINCT hour) FROM usage_rollup").fetchone()[0] == len(hours)
    conn.close()


def test_prints_json_with_every_layout_and_the_floor():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "rollup_layout.py"), "--events", "2000", "--rounds", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert set(result["layouts"]) == {"floor", *rollup_layout.LAYOUTS}
    assert result["layouts"]["schema"]["ratio_to_schema"] == 1.0
    assert all(v["cpu_s"] > 0 for v in result["layouts"].values())
