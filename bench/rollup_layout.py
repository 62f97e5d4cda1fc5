"""What one hourly rollup row costs SQLite to write, by the layout of ``usage_rollup``.

    python bench/rollup_layout.py [--events 200000] [--customers 1000] [--rounds 2]

The rollup deltas of ``bench/ingest.py``'s events (the real ``RollupPlanner`` and the real
upsert, ``billing.store.rollup_sql``, in chunks of 50,000 events, key order), written into
``usage_rollup`` tables that differ only in their key: the schema's (a rowid table and a
primary key customer_id, hour, type, model, dims), the same key WITHOUT ROWID, the key
hour-first, and hour-first WITHOUT ROWID; beside a floor, the bare insert of the events
into the ``bench/ingest.py`` floor table. Times are CPU seconds of this process (SQLite runs
in it), so a busy machine moves them far less than wall-clock figures. Prints JSON: per
layout the best CPU seconds, rows written, and the ratio to the schema's layout.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.ingest import make_events  # noqa: E402

CHUNK = 50_000
_COLUMNS = ("customer_id varchar(200) NOT NULL, hour bigint NOT NULL, type varchar(100) NOT NULL, "
            "model varchar(200) NOT NULL, dims varchar(2000) NOT NULL, events bigint NOT NULL, "
            "cost_pico bigint NOT NULL, cost_carry bigint NOT NULL, input_tokens bigint NOT NULL, "
            "output_tokens bigint NOT NULL, cache_read_tokens bigint NOT NULL, cache_write_tokens bigint NOT NULL, "
            "reasoning_tokens bigint NOT NULL, sums text NOT NULL, rounded bigint NOT NULL, odd bigint NOT NULL, tokened bigint")
LAYOUTS = {
    "schema": "PRIMARY KEY (customer_id, hour, type, model, dims))",
    "schema_without_rowid": "PRIMARY KEY (customer_id, hour, type, model, dims)) WITHOUT ROWID",
    "hour_first": "PRIMARY KEY (hour, customer_id, type, model, dims))",
    "hour_first_without_rowid": "PRIMARY KEY (hour, customer_id, type, model, dims)) WITHOUT ROWID",
}


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536", "temp_store=MEMORY"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def chunk_rows(events: list[dict]) -> list[list[tuple]]:
    """Each chunk's upsert rows, as ingestion builds them (planner, then ``rollup_sql._rows``)."""
    from billing.ledger.rollups import DEFAULT_DIMENSIONS, RollupPlanner
    from billing.store.rollup_sql import _rows
    from billing.store.types import to_us
    from datetime import datetime

    out = []
    for i in range(0, len(events), CHUNK):
        planner = RollupPlanner(DEFAULT_DIMENSIONS)
        for e in events[i:i + CHUNK]:
            p = e["properties"]
            planner.add(e["customer"], e["type"], to_us(datetime.fromisoformat(e["timestamp"])), p["model"], p, 1000)
        out.append(_rows(planner.deltas))
    return out


def write(path: str, layout: str, chunks: list[list[tuple]], hour_first: bool) -> tuple[float, int]:
    from billing.store.rollup_sql import rollup_upsert

    conn = _connect(path)
    conn.execute(f"CREATE TABLE usage_rollup ({_COLUMNS}, {LAYOUTS[layout]}")
    per = 800  # as billing.store.rollup_sql.upsert_rollups
    t0 = time.process_time()
    for rows in chunks:
        if hour_first:  # the key order of this layout
            rows = sorted(rows, key=lambda r: (r[1], r[0], r[2], r[3], r[4]))
        conn.execute("BEGIN IMMEDIATE")
        for i in range(0, len(rows), per):
            part = rows[i:i + per]
            conn.execute(rollup_upsert("?", False, len(part)), [v for r in part for v in r])
        conn.execute("COMMIT")
    seconds = time.process_time() - t0
    n = conn.execute("SELECT COUNT(*) FROM usage_rollup").fetchone()[0]
    conn.close()
    return seconds, n


def floor(path: str, events: list[dict]) -> float:
    """``bench/ingest.py``'s floor: the events, bare, into a table with one unique key."""
    conn = _connect(path)
    conn.execute("CREATE TABLE bench_floor (id INTEGER PRIMARY KEY, customer_id varchar(200), event_id varchar(200), "
                 "type varchar(100), ts bigint, properties json, model varchar(200), cost_pico bigint, "
                 "UNIQUE (customer_id, event_id))")
    rows = [(e["customer"], e["id"], e["type"], 0, json.dumps(e["properties"]), e["properties"]["model"], 0)
            for e in events]
    t0 = time.process_time()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO bench_floor (customer_id, event_id, type, ts, properties, model, cost_pico) "
                     "VALUES (?,?,?,?,?,?,?)", rows)
    conn.execute("COMMIT")
    seconds = time.process_time() - t0
    conn.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved rounds; the least CPU of each is kept.")
    args = parser.parse_args()
    events = make_events(args.events, args.customers)
    chunks = chunk_rows(events)
    best: dict[str, float] = {}
    rows: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            best["floor"] = min(best.get("floor", 1e9), floor(os.path.join(tmp, f"floor{r}.db"), events))
            rows["floor"] = len(events)
            for layout in LAYOUTS:
                s, n = write(os.path.join(tmp, f"{layout}{r}.db"), layout, chunks, layout.startswith("hour_first"))
                best[layout], rows[layout] = min(best.get(layout, 1e9), s), n
    base = best["schema"]
    print(json.dumps({"events": args.events, "customers": args.customers, "load_average": os.getloadavg()[0],
                      "layouts": {k: {"cpu_s": round(v, 3), "rows": rows[k], "ratio_to_schema": round(v / base, 3)}
                                  for k, v in best.items()}}))


if __name__ == "__main__":
    main()
