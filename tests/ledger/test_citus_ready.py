"""Citus readiness (issue 17, item 2): the schema can be distributed by customer
(``billing.store.distribution``). Generic, so that a new table is held to it too:

- every table of the models (SQLAlchemy metadata) and of the migrated PostgreSQL database
  with a ``customer_id`` column is distributed unless the plan lists it as a reference or
  local table, and each primary and unique key of a distributed table includes
  ``customer_id``;
- every statement the hot path sends to PostgreSQL (captured at the driver while it ingests
  a small and a large batch and a replay, checks, reserves, commits, releases and closes a
  period) that touches a distributed table names its customers: a ``customer_id`` filter
  (``=``, ``IN``, ``= ANY``, a join ``USING (customer_id)``) or, for an insert, the column.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import psycopg
import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel

import billing.store.models  # noqa: F401 (registers the tables)
import billing.store.operational_models  # noqa: F401
from billing.store.distribution import DISTRIBUTION_COLUMN, LOCAL_TABLES, REFERENCE_TABLES, distributed
from billing.store.partitions import PARENT, existing_months, partition_name, sql_runner
from tests.support.ledger import CATALOG, _setup

NOW = datetime(2026, 10, 20, tzinfo=UTC)


def key_problems(tables: dict[str, tuple[set[str], list[list[str]]]]) -> list[str]:
    """table -> (columns, its keys: primary and unique) -> what breaks the rule."""
    out = []
    for name, (columns, keys) in sorted(tables.items()):
        if not distributed(name, columns):
            continue
        for key in keys:
            if DISTRIBUTION_COLUMN not in key:
                out.append(f"{name}: key {key} lacks {DISTRIBUTION_COLUMN}")
    return out


def metadata_tables() -> dict[str, tuple[set[str], list[list[str]]]]:
    out = {}
    for t in SQLModel.metadata.sorted_tables:
        keys = [[c.name for c in t.primary_key.columns]]
        keys += [[c.name for c in u.columns] for u in t.constraints if isinstance(u, sa.UniqueConstraint)]
        keys += [[c.name for c in i.columns] for i in t.indexes if i.unique]
        out[t.name] = ({c.name for c in t.columns}, keys)
    return out


# the one model key PostgreSQL holds otherwise: SQLite's usage_event keeps its rowid (id) as
# primary key; PostgreSQL's partitioned table has (id, ts, customer_id) (checked below, on
# the database itself)
SQLITE_ONLY = {"usage_event: key ['id'] lacks customer_id"}


def database_tables(conn) -> dict[str, tuple[set[str], list[list[str]]]]:
    """The migrated PostgreSQL database's tables (partitions excluded: they are their parent's)."""
    rows = conn.exec_driver_sql(
        "SELECT c.relname, array_agg(a.attname ORDER BY a.attnum) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public' "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition GROUP BY c.relname").all()
    keys = conn.exec_driver_sql(
        "SELECT c.relname, array_agg(a.attname ORDER BY a.attnum) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public' "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) "
        "WHERE (i.indisunique OR i.indisprimary) AND NOT c.relispartition GROUP BY c.relname, i.indexrelid").all()
    out = {name: (set(cols), []) for name, cols in rows}
    for name, cols in keys:
        out[name][1].append(list(cols))
    return out


def test_the_models_keys_include_the_customer():
    assert set(key_problems(metadata_tables())) == SQLITE_ONLY


def test_every_table_is_placed_once():
    assert not set(REFERENCE_TABLES) & set(LOCAL_TABLES)
    names = set(metadata_tables())
    assert set(REFERENCE_TABLES) <= names and set(LOCAL_TABLES) - {"alembic_version"} <= names


def test_the_rule_finds_what_it_looks_for():
    tables = {"thing": ({"id", "customer_id"}, [["id"]]), "fine": ({"customer_id", "k"}, [["customer_id", "k"]]),
              "customer": ({"id"}, [["id"]])}
    assert key_problems(tables) == ["thing: key ['id'] lacks customer_id"]
    assert unroutable(["SELECT 1 FROM usage_counter WHERE meter = %s", "LOCK TABLE usage_event IN SHARE MODE",
                       "SELECT 1 FROM usage_counter WHERE customer_id = %s", "INSERT INTO usage_counter (meter) "
                       "VALUES (%s)", "COPY usage_event (customer_id, ts) FROM STDIN"], {"usage_counter",
                                                                                            "usage_event"}) == [
        "SELECT 1 FROM usage_counter WHERE meter = %s", "INSERT INTO usage_counter (meter) VALUES (%s)"]


_SKIP = re.compile(r"^\s*(LOCK|CREATE|ALTER|DROP|SAVEPOINT|RELEASE|ROLLBACK|BEGIN|COMMIT|SET|TRUNCATE|SHOW)\b", re.I)
# compared with values (a parameter, a literal, a list, an array), not with another column
_FILTER = re.compile(r"customer_id\s*(=\s*(%s|\?|%\(|'|ANY)|IN\s*\(\s*(%s|\?|%\(|'|SELECT))"
                     r"|USING\s*\(\s*customer_id", re.I)
_INSERT = re.compile(r"^\s*(?:WITH\b.*?\)\s*)?(?:INSERT\s+INTO|COPY)\s+(\w+)\s*\(([^)]*)\)", re.I | re.S)


def unroutable(statements: list[str], tables: set[str]) -> list[str]:
    """The statements touching one of ``tables`` that do not name their customers."""
    out = []
    for sql in statements:
        if _SKIP.match(sql):
            continue
        touched = {t for t in tables if re.search(rf"\b(FROM|JOIN|INTO|UPDATE|COPY)\s+{t}\b", sql, re.I)}
        if not touched:
            continue
        insert = _INSERT.match(sql)
        if insert and insert.group(1) in tables and DISTRIBUTION_COLUMN in insert.group(2) and \
                len(touched) == 1:
            continue
        if _FILTER.search(sql) or (insert and DISTRIBUTION_COLUMN in insert.group(2)):
            continue
        out.append(sql)
    return out


@pytest.fixture
def captured(monkeypatch):
    """The SQL every psycopg cursor sends (SQLAlchemy's and the raw ones of the quota path)."""
    seen: list[str] = []

    def record(query) -> None:
        seen.append(query if isinstance(query, str) else query.as_string(None) if hasattr(query, "as_string")
                    else str(query))

    for cls in (psycopg.Cursor,):
        for name in ("execute", "executemany", "copy"):
            real = getattr(cls, name)

            def wrapped(self, query, *args, _real=real, **kwargs):
                record(query)
                return _real(self, query, *args, **kwargs)

            monkeypatch.setattr(cls, name, wrapped)
    return seen


@pytest.mark.postgres
def test_the_database_keys_and_the_hot_path_statements_are_routable_by_customer(db_url, captured):
    if not db_url.startswith("postgresql"):
        pytest.skip("Citus is PostgreSQL")
    from billing.invoicing.service import Invoicing
    from billing.ledger.ingest import Ledger
    from billing.reservations.holds import Quota
    from billing.store.db import engine_for
    from tests.support.ledger import _event

    engine = engine_for(db_url)
    with engine.connect() as conn:
        tables = database_tables(conn)
        assert partition_name(10) not in tables and PARENT in tables and not existing_months(sql_runner(conn)) & {-1}
    assert key_problems(tables) == []
    distributed_tables = {name for name, (cols, _k) in tables.items() if distributed(name, cols)}
    assert {"usage_event", "usage_event_key", "usage_counter", "quota_hold"} <= distributed_tables

    _setup(engine)
    ledger = Ledger(engine, CATALOG, clock=lambda: NOW, alerts=True)
    quota = Quota(engine, CATALOG, clock=lambda: NOW, alerts=False)
    try:
        captured.clear()
        ledger.record([_event("acme", f"s{i}", i, task="t") for i in range(5)])  # the API's path
        ledger.record([_event("beta", f"b{i}", i, task="t") for i in range(700)])  # COPY
        ledger.record([_event("beta", f"b{i}", i) for i in range(600)])  # replays: staging, existing events
        quota.check("acme", "llm_calls")
        hold = quota.reserve("acme", "llm_calls", task="t")
        quota.commit(hold.id, _event("acme", "q1", 3, task="t"), customer="acme")
        other = quota.reserve("acme", "llm_calls")
        quota.release(other.id, customer="acme")
        Invoicing(engine, CATALOG, clock=lambda: datetime(2026, 11, 2, tzinfo=UTC)).close(
            datetime(2026, 11, 1, 1, tzinfo=UTC))
    finally:
        quota.close()
        ledger.close()
    statements = list(dict.fromkeys(captured))
    assert len(statements) > 20
    bad = unroutable(statements, distributed_tables)
    assert {_FANOUTS_BY_DESIGN.get(_shape(sql), sql) for sql in bad} <= set(_FANOUTS_BY_DESIGN.values()), \
        "\n".join(sql for sql in bad if _shape(sql) not in _FANOUTS_BY_DESIGN)
    assert {_shape(sql) for sql in bad} == set(_FANOUTS_BY_DESIGN)  # (a fixed one leaves this list)


def _shape(sql: str) -> str:
    return " ".join(sql.split())[:60]


# statements the hot path sends to every shard, and why (README "Past one database server")
_FANOUTS_BY_DESIGN = {
    # the close's watermark: one MAX per close, over the whole ledger by definition
    "SELECT COALESCE(MAX(id), 0) FROM usage_event": "the close's watermark",
    # a commit or release names its hold by id only (the caller need not say whose): the
    # holds are read by id (their customer joins the subscriptions and the event)
    "SELECT h.id, h.customer_id, h.status, h.event_type, h.model,": "holds read by reservation id",
    # the batched quota reads name their customers in a JSON parameter joined laterally: one
    # statement for the batch; Citus would need `customer_id = ANY(...)` beside it to prune
    _shape("WITH c AS (SELECT (e->>0)::varchar AS customer_id, (e->>1)::bigint AS period_start FROM"):
        "a reserve batch's counters and holds",
    _shape("WITH t AS (SELECT (e->>0)::varchar AS customer_id, (e->>1)::varchar AS task_id FROM "):
        "a reserve batch's agent task usage",
}
