"""The hourly rollups of the events quota commits record (``billing.ledger.rollups``), in
the commit's transaction, by ingestion's rules: what an event adds is planned by
``RollupPlanner`` and written by ``billing.store.rollup_sql``'s upsert; only the events the
transaction inserted add (a duplicate or conflicting commit adds nothing); the rows are
written after the counters and before the holds' settlement and agent task usage, in key
order (the lock order of ``billing.store.event_store``).

The rollups' dimensions are read in the batch's transaction, after the lock its events'
insert takes (``rollup_sql.DIMENSIONS_SQL``, in round 1 of ``billing.reservations.writer``): a
``billing db recount`` that changes them commits before or waits after.

PostgreSQL: which events are new is known only inside the commit's one statement
(``billing.reservations.events``), so each event's delta travels on its own (``pg_rows``,
one JSON parameter) and the statement sums the inserted ones per key
(``rollup_sql.inserted_upsert_cte``). SQLite:
the inserted keys are known in Python; their events are planned as a chunk and upserted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from billing.ledger.prepare import Prepared
from billing.ledger.rollups import RollupPlanner
from billing.reservations.sql import json_rows
from billing.store import rollup_sql

def pg_rows(dims: Sequence[str], events: Sequence[Prepared]) -> str:
    """Each event's own rollup delta (as it would add alone), the JSON parameter of ``rollup_sql.inserted_upsert_cte``."""
    planner = RollupPlanner(dims)
    per_event = []
    for p in events:
        planner.deltas = {}
        planner.add_rows((p,))
        (key, delta), = planner.deltas.items()
        per_event.append((p.event_id, key, delta))
    return json_rows(rollup_sql.event_rows(per_event))


def write_sqlite(execute: Callable[[str, Any], Any], connection: Any, dims: Sequence[str],
                 events: Sequence[Prepared]) -> None:
    """Add the rollups of ``events`` (those the transaction inserted) on SQLite's
    ``connection`` (the write lock held)."""
    if not events:
        return
    planner = RollupPlanner(dims)
    planner.add_rows(events)
    for sql, params in rollup_sql.sqlite_upserts(connection, planner.deltas):
        execute(sql, params)
