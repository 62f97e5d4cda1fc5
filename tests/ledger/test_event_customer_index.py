"""One customer's events in time order read by the ``(customer_id, ts, id)`` index
(migration ``0019_hardening``): on SQLite the keyset page of ``GET /v1/events?customer=``
searches it (no sort of the customer's events); on PostgreSQL the index is on the
partitioned parent, so every monthly partition has it, one created later too."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import event

from billing.store import partitions
from billing.store.pages import Key, events_page
from billing.store.types import to_us


def _page_sql(engine, **kwargs) -> tuple[str, object]:
    seen = []

    def capture(conn, cursor, statement, params, context, many):
        seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.connect() as conn:
            events_page(conn, limit=10, **kwargs)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return seen[-1]


def test_a_customers_page_searches_the_customer_index_on_sqlite(sqlite_engine):
    after = Key(to_us(datetime(2026, 10, 5, tzinfo=UTC)), 12)
    for kwargs in ({"customer": "acme"}, {"customer": "acme", "after": after}):
        statement, params = _page_sql(sqlite_engine, **kwargs)
        with sqlite_engine.connect() as conn:
            plan = " | ".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params))
        assert "ix_usage_event_customer_ts" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # read in order, not sorted


def test_every_partition_has_the_customer_index_on_postgres(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("partitions are PostgreSQL's")
    with engine.begin() as conn:
        run = partitions.sql_runner(conn)
        later = max(partitions.existing_months(run)) + 2
        assert partitions.create_month(run, later)
    with engine.connect() as conn:
        months = partitions.existing_months(partitions.sql_runner(conn))
        indexed = {r[0] for r in conn.exec_driver_sql(
            "SELECT t.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "JOIN pg_class t ON t.oid = x.indrelid JOIN pg_inherits h ON h.inhrelid = i.oid "
            "JOIN pg_class p ON p.oid = h.inhparent WHERE p.relname = 'ix_usage_event_customer_ts'")}
    assert later in months
    assert indexed == {partitions.partition_name(m) for m in months}
