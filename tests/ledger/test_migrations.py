"""Alembic migrations, on SQLite and PostgreSQL: upgrade from empty, downgrade to base,
upgrade again; and the SQLModel tables match what the migrations build (no pending
autogenerate diff).

The comparison covers the tables of every module that ``migrations/env.py`` registers
(``billing.store.models`` and ``billing.store.operational_models``); test files may register
throwaway SQLModel tables in the same process, which are not the migrations' business. Types are compared
(``compare_type=True``); ``test_type_comparison_is_meaningful`` shows that a changed
type, including the ``UTCDateTime`` decorator's ``timestamptz`` on PostgreSQL, does
show up, so an empty diff means something.
"""

from __future__ import annotations

import inspect as pyinspect

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

import billing.store.models as ledger_models
import billing.store.operational_models as quota_models
from billing.store.db import alembic_config, downgrade, upgrade
from tests.support.db import engine_for_url


def ledger_tables() -> set[str]:
    """Names of the tables defined in the modules the migrations cover."""
    return {obj.__table__.name for module in (ledger_models, quota_models)
            for _, obj in pyinspect.getmembers(module, pyinspect.isclass)
            if issubclass(obj, SQLModel) and hasattr(obj, "__table__") and obj.__module__ == module.__name__}


def _table_of(diff) -> str | None:
    """The table a compare_metadata entry is about (entries are tuples, or lists of tuples)."""
    if isinstance(diff, list):
        return _table_of(diff[0])
    kind, *rest = diff
    if kind in ("add_table", "remove_table"):
        return rest[0].name
    if kind in ("add_column", "remove_column"):
        return rest[1]
    if kind.startswith("modify_"):
        return rest[1]
    if kind in ("add_index", "remove_index"):
        return rest[0].table.name
    if kind in ("add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        return rest[0].table.name
    return None


def pending_diff(url: str, metadata: sa.MetaData | None = None) -> list:
    """compare_metadata(database, models), limited to the ledger tables."""
    wanted = ledger_tables()
    with engine_for_url(url) as engine, engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
        diff = compare_metadata(context, metadata if metadata is not None else SQLModel.metadata)
    return [d for d in diff if _table_of(d) in wanted and not (url.startswith("postgresql") and _partition_key(d))]


def _partition_key(diff) -> bool:
    """The one difference PostgreSQL's partitioned ``usage_event`` has by design
    (``billing.store.partitions``): its unique key holds the partition column too,
    ``(customer_id, event_id, ts)``, where the model says ``(customer_id, event_id)`` (kept
    across months by ``usage_event_key``)."""
    if isinstance(diff, list) or diff[0] not in ("add_constraint", "remove_constraint"):
        return False
    constraint = diff[1]
    columns = [c.name for c in constraint.columns]
    return (constraint.table.name == "usage_event" and isinstance(constraint, sa.UniqueConstraint)
            and columns in (["customer_id", "event_id"], ["customer_id", "event_id", "ts"]))


def table_names(url: str) -> set[str]:
    with engine_for_url(url) as engine:
        return set(sa.inspect(engine).get_table_names())


def current_revision(url: str) -> str | None:
    with engine_for_url(url) as engine, engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(url: str) -> str:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def test_ledger_tables_are_known():
    assert {"customer", "subscription", "seat_change", "usage_event", "usage_counter", "credit_grant",
            "credit_burn", "invoice", "invoice_line", "invoice_recheck", "number_sequence"} <= ledger_tables()


@pytest.mark.slow
def test_upgrade_downgrade_upgrade(empty_db_url):
    url = empty_db_url
    assert not (table_names(url) & ledger_tables())

    upgrade(url)
    assert ledger_tables() <= table_names(url)
    assert current_revision(url) == head_revision(url)
    assert pending_diff(url) == []

    upgrade(url)  # idempotent: already at head
    assert current_revision(url) == head_revision(url)

    downgrade(url, "base")
    assert not (table_names(url) & ledger_tables())
    assert current_revision(url) is None
    if url.startswith("postgresql"):
        with engine_for_url(url) as engine, engine.connect() as conn:
            leftovers = conn.exec_driver_sql(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'S', 'i') AND relname NOT IN ('alembic_version', 'alembic_version_pkc')").scalars().all()
        assert leftovers == []  # no tables, sequences or indexes left behind

    upgrade(url)
    assert ledger_tables() <= table_names(url)
    assert current_revision(url) == head_revision(url)
    assert pending_diff(url) == []


def test_data_survives_nothing_but_schema_comes_back(empty_db_url):
    """After a full downgrade and upgrade the tables are usable again (insert and read)."""
    from datetime import UTC, datetime

    from billing.store.models import Customer
    from sqlmodel import Session, select

    url = empty_db_url
    upgrade(url)
    downgrade(url, "base")
    upgrade(url)
    with engine_for_url(url) as engine:
        with Session(engine) as s:
            s.add(Customer(id="c1", created_at=datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)))
            s.commit()
        with Session(engine) as s:
            row = s.exec(select(Customer)).one()
            assert row.created_at == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
            assert row.created_at.tzinfo is not None


def test_type_comparison_is_meaningful(empty_db_url):
    """The empty diff above is not an artefact: real type differences are detected."""
    url = empty_db_url
    upgrade(url)
    changed = sa.MetaData()
    for table in SQLModel.metadata.sorted_tables:
        if table.name in ledger_tables():
            table.to_metadata(changed)
    changed.tables["customer"].c.name.type = sa.String(301)
    changed.tables["customer"].c.created_at.type = sa.Integer()
    kinds = {(d[0][0], d[0][2], d[0][3]) for d in pending_diff(url, changed) if isinstance(d, list)}
    assert ("modify_type", "customer", "name") in kinds
    assert ("modify_type", "customer", "created_at") in kinds

    if url.startswith("postgresql"):
        # UTCDateTime must be timestamptz on PostgreSQL: a plain timestamp column is a diff
        with engine_for_url(url) as engine, engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE invoice ALTER COLUMN created_at TYPE timestamp without time zone")
            # (ts is usage_event's partition key, which cannot change type: another of its columns)
            conn.exec_driver_sql("ALTER TABLE usage_event ALTER COLUMN cost_pico TYPE integer")
        kinds = {(d[0][0], d[0][2], d[0][3]) for d in pending_diff(url) if isinstance(d, list)}
        assert kinds == {("modify_type", "invoice", "created_at"), ("modify_type", "usage_event", "cost_pico")}


def test_events_from_before_0003_flag_the_counters_stale(empty_db_url):
    """Revision 0003 adds the ``*`` counter rows: a database that already holds events lacks
    them, so it is flagged and invoices are rated from events until ``recount_all``."""
    from datetime import UTC, datetime

    from billing.invoicing.service import Invoicing
    from billing.ledger.recount import counters_stale, recount_all
    from tests.support.db import counter_rows, invoicing_catalog

    url = empty_db_url
    upgrade(url, "0002")
    ph = "%s" if url.startswith("postgresql") else "?"
    oct1, nov1 = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    with engine_for_url(url) as engine:
        with engine.begin() as conn:
            for sql, params in (
                ("INSERT INTO customer (id, name, timezone, currency, created_at) VALUES (?, '', 'UTC', 'USD', ?)",
                 ("a", oct1)),
                ("INSERT INTO subscription (id, customer_id, plan_id, plan_version, status, started_at, anchor_at, "
                 "created_at) VALUES (1, 'a', 'seats-requests', 1, 'active', ?, ?, ?)", (oct1, oct1, oct1)),
                ("INSERT INTO seat_change (subscription_id, effective_at, seats, created_at) VALUES (1, ?, 1, ?)",
                 (oct1, oct1)),
                ("INSERT INTO usage_event (customer_id, event_id, type, ts, properties, model, cost_pico) "
                 "VALUES ('a', 'e1', 'request', 1791000000000000, '{}', NULL, 0)", ()),
                ("INSERT INTO usage_counter (customer_id, meter, period_start, period_end, units_micro, events, "
                 "cost_pico) VALUES ('a', 'requests', 1790812800000000, 1793491200000000, 1000000, 1, 0)", ())):
                params = tuple(p.replace(tzinfo=None).isoformat(" ") if isinstance(p, datetime) and ph == "?" else p
                               for p in params)
                conn.exec_driver_sql(sql.replace("?", ph), params)
        upgrade(url)
        with engine.connect() as conn:
            assert counters_stale(conn)
        catalog = invoicing_catalog()
        result = Invoicing(engine, catalog, clock=lambda: nov1).close(nov1)
        assert len(result.invoices) == 1 and result.rated_from_counters == 0  # from the events
        with engine.begin() as conn:
            recount_all(conn, catalog)
        with engine.connect() as conn:
            assert not counters_stale(conn)
        assert counter_rows(engine)[("a", "*", 1790812800000000)] == (1793491200000000, 0, 1, 0)
    downgrade(url, "0002")
    upgrade(url)


def test_rollup_dimensions_default_to_feature(empty_db_url):
    """Revision 0018 keeps ``feature`` (and a deployment's own dimensions) and drops ``task``
    and ``user`` (a row per value; BILLING_ROLLUP_DIMENSIONS adds them back): the migrated
    set is the default ``billing db recount`` writes, and a downgrade restores 0017's."""
    from billing.config import Settings
    from billing.store import rollup_sql

    url = empty_db_url
    upgrade(url, "0017_rollups")
    with engine_for_url(url) as engine:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO rollup_dimension (name) VALUES ('team')")
        upgrade(url)
        with engine.connect() as conn:
            assert rollup_sql.dimensions(conn) == ("feature", "team")
        assert Settings(rollup_dimensions="").rollup_dimension_names() == ("feature",)
        assert Settings(rollup_dimensions="user, task").rollup_dimension_names() == ("feature", "task", "user")
        downgrade(url, "0017_rollups")
        with engine.connect() as conn:
            assert rollup_sql.dimensions(conn) == ("feature", "task", "team", "user")
