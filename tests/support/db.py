"""Fresh, migrated databases for tests: SQLite files and (optionally) PostgreSQL databases.

The same test runs against both (DESIGN.md section 8):

- ``sqlite``: a new file under the test's temporary directory, migrated with ``upgrade``.
- ``postgres``: only when ``BILLING_TEST_POSTGRES_URL`` is set (e.g.
  ``postgresql+psycopg://postgres@127.0.0.1:5432/test``). A new database
  ``billing_t_<uuid>`` is created on that server (autocommit) for each test module,
  migrated, emptied before each test (``reset_database``) and dropped ``WITH (FORCE)``
  after the module. Without the variable the postgres cases are skipped, unless
  ``BILLING_REQUIRE_POSTGRES=1`` (CI), in which case they fail. A set but unreachable
  server always fails, never skips.

Plain helpers (databases, the services over one database with a fixed clock, snapshots of
events / counters / documents, the test plans) live here; the pytest fixtures built on
them are in ``tests/conftest.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from billing.store.db import make_engine, normalize_url, upgrade

POSTGRES_ENV = "BILLING_TEST_POSTGRES_URL"
REQUIRE_ENV = "BILLING_REQUIRE_POSTGRES"
BACKENDS = ("sqlite", "postgres")


def postgres_server_url() -> str:
    """The configured server URL; skips (or fails, when PostgreSQL is required) if unset."""
    url = os.environ.get(POSTGRES_ENV, "").strip()
    if not url:
        if os.environ.get(REQUIRE_ENV, "").strip() in ("1", "true", "yes"):
            pytest.fail(f"{REQUIRE_ENV}=1 but {POSTGRES_ENV} is not set: the PostgreSQL tests cannot run",
                        pytrace=False)
        pytest.skip(f"{POSTGRES_ENV} is not set")
    return normalize_url(url)


def _libpq(url: str, database: str | None = None) -> str:
    """A SQLAlchemy URL as a libpq connection string (for psycopg), optionally for another database."""
    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def _admin_connection(server_url: str):
    import psycopg

    try:
        return psycopg.connect(_libpq(server_url), autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:  # set but unreachable: a failure, not a skip
        pytest.fail(f"{POSTGRES_ENV} is set but the server is unreachable: {exc}", pytrace=False)


@contextmanager
def postgres_database(server_url: str, *, migrate: bool = True) -> Iterator[str]:
    """Create ``billing_t_<uuid>`` on the server, (migrate it,) yield its URL, drop it after."""
    name = f"billing_t_{uuid.uuid4().hex[:20]}"
    with _admin_connection(server_url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        if migrate:
            upgrade(url)
        yield url
    finally:
        with _admin_connection(server_url) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def sqlite_database(directory: Path, *, migrate: bool = True) -> Iterator[str]:
    path = Path(directory) / f"billing_{uuid.uuid4().hex[:12]}.db"
    url = f"sqlite:///{path}"
    if migrate:
        upgrade(url)
    yield url


@contextmanager
def fresh_database(backend: str, directory: Path, *, migrate: bool = True) -> Iterator[str]:
    """A new empty database of ``backend`` ("sqlite" | "postgres"), migrated to head by default."""
    if backend == "sqlite":
        with sqlite_database(directory, migrate=migrate) as url:
            yield url
    elif backend == "postgres":
        with postgres_database(postgres_server_url(), migrate=migrate) as url:
            yield url
    else:
        raise ValueError(f"unknown backend {backend!r}")


_RESET_PLAN: dict[str, tuple[list[str], list[str]]] = {}


def reset_database(url: str) -> None:
    """Empty every table except ``alembic_version`` and restart identities (so ids and
    document numbers start again at 1). Much cheaper than a new PostgreSQL database."""
    import sqlalchemy as sa

    with engine_for_url(url) as engine, engine.begin() as conn:
        if url not in _RESET_PLAN:  # children before parents (foreign keys)
            meta = sa.MetaData()
            meta.reflect(conn)
            # (rollup_dimension: configuration the migration seeds, kept like alembic_version)
            tables = [t.name for t in reversed(meta.sorted_tables) if t.name not in ("alembic_version",
                                                                                     "rollup_dimension")]
            sequences = []
            if conn.dialect.name == "postgresql":
                sequences = list(conn.exec_driver_sql(
                    "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()").scalars())
            elif conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").first():
                tables.append("sqlite_sequence")
            _RESET_PLAN[url] = (tables, sequences)
        tables, sequences = _RESET_PLAN[url]
        for name in tables:
            conn.exec_driver_sql(f'DELETE FROM "{name}"')
        for name in sequences:
            conn.exec_driver_sql(f'ALTER SEQUENCE "{name}" RESTART')


@contextmanager
def engine_for_url(url: str):
    """An engine that is disposed afterwards (so PostgreSQL databases can be dropped)."""
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- services

class World:
    """The ledger and invoicing services over one database, sharing a fixed clock
    (``world.now`` is what both read; move it with ``world.at``)."""

    def __init__(self, engine, catalog, start):
        from billing.invoicing.service import Invoicing
        from billing.ledger.accounts import Accounts
        from billing.ledger.ingest import Ledger

        self.engine = engine
        self.catalog = catalog
        self.now_holder = [start]
        self.accounts = Accounts(engine, catalog)
        self.ledger = Ledger(engine, catalog, clock=lambda: self.now_holder[0])
        self.invoicing = Invoicing(engine, catalog, clock=lambda: self.now_holder[0])

    @property
    def now(self):
        return self.now_holder[0]

    def at(self, when) -> None:
        self.now_holder[0] = when

    def record(self, events, **kwargs):
        return self.ledger.record(list(events), **kwargs)


def _customer_filter(engine, customer: str | None) -> tuple[str, tuple]:
    """(`` WHERE customer_id = <placeholder>``, its parameters), or no filter for None."""
    if customer is None:
        return "", ()
    return (" WHERE customer_id = %s" if engine.dialect.name == "postgresql" else " WHERE customer_id = ?"), (customer,)


def stored_events(engine, customer: str | None = None) -> list[tuple]:
    """Every stored usage event as (customer, event id, type, ts, properties dict, model,
    cost_pico, id), in id order."""
    import json

    where, params = _customer_filter(engine, customer)
    sql = "SELECT customer_id, event_id, type, ts, properties, model, cost_pico, id FROM usage_event" + where
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(sql + " ORDER BY id", params).all()
    return [(c, e, t, int(ts), json.loads(p) if isinstance(p, str) else p, m, int(cost), int(i))
            for c, e, t, ts, p, m, cost, i in rows]


WIDE = 10**18  # a stored total is carry * WIDE + low, 0 <= low < WIDE (billing.store.wide)


def _joined(row, low: str, carry: str) -> int:
    """A stored total of a row (a mapping): every part an integer, the low part in [0, WIDE)
    (a float, or a part out of range, fails here). Rows of a schema without the carry
    column (before revision 0005) count a carry of 0."""
    value, high = row[low], row.get(carry, 0)
    assert type(value) is int and type(high) is int, (dict(row), low)
    assert 0 <= value < WIDE, (dict(row), low)
    return high * WIDE + value


def counter_rows(engine, customer: str | None = None) -> dict[tuple[str, str, int], tuple[int, int, int, int]]:
    """(customer, meter, period_start) -> (period_end, units_micro, events, cost_pico), units
    and cost exact integers joined from their stored parts (``_joined``)."""
    where, params = _customer_filter(engine, customer)
    sql = "SELECT * FROM usage_counter" + where
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(sql, params).mappings().all()
    return {(r["customer_id"], r["meter"], int(r["period_start"])):
            (int(r["period_end"]), _joined(r, "units_micro", "units_carry"), int(r["events"]),
             _joined(r, "cost_pico", "cost_carry")) for r in rows}


def task_usage_rows(engine) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(customer, task) -> (steps, tokens, cost_pico) of ``agent_task_usage``, exact integers
    joined from their stored parts (``_joined``)."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT * FROM agent_task_usage").mappings().all()
    return {(r["customer_id"], r["task_id"]): (int(r["steps"]), _joined(r, "tokens", "tokens_carry"),
                                               _joined(r, "cost_pico", "cost_carry")) for r in rows}


def rollup_rows(engine) -> dict[tuple, tuple]:
    """(customer, hour, type, model, dims) -> (events, cost_pico joined (``_joined``), the five
    token sums, the other integer sums (a dict: the JSON text may be written either way),
    rounded, odd, tokened) of ``usage_rollup``."""
    import json

    from billing.store.rollup_sql import TOKENS

    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT * FROM usage_rollup").mappings().all()
    return {(r["customer_id"], int(r["hour"]), r["type"], r["model"], r["dims"]):
            (int(r["events"]), _joined(r, "cost_pico", "cost_carry"), *(int(r[t]) for t in TOKENS),
             {k: int(v) for k, v in json.loads(r["sums"]).items()}, int(r["rounded"]), int(r["odd"]),
             None if r["tokened"] is None else int(r["tokened"])) for r in rows}


def documents(engine) -> list[tuple]:
    """Every invoice / credit note with its lines: (id, number, kind, status, customer,
    subscription, period_start, period_end, total_minor, corrects, lines) in id order;
    lines are (position, kind, key, quantity, unit_price, amount_minor, service_start, service_end)."""
    from sqlmodel import Session, select

    from billing.store.models import Invoice, InvoiceLineRow

    with Session(engine) as s:
        invoices = s.exec(select(Invoice).order_by(Invoice.id)).all()
        lines = s.exec(select(InvoiceLineRow).order_by(InvoiceLineRow.invoice_id, InvoiceLineRow.position)).all()
    by_invoice: dict[int, list[tuple]] = {}
    for ln in lines:
        by_invoice.setdefault(ln.invoice_id, []).append(
            (ln.position, ln.kind, ln.key, ln.quantity, ln.unit_price, ln.amount_minor, ln.service_start,
             ln.service_end))
    return [(inv.id, inv.number, inv.kind, inv.status, inv.customer_id, inv.subscription_id, inv.period_start,
             inv.period_end, inv.total_minor, inv.corrects_invoice_id, tuple(by_invoice.get(inv.id, ())))
            for inv in invoices]


# ------------------------------------------------------------------------------ plans
# Plans used by the ledger tests on top of the shipped ones in ``plans/``: meters the
# shipped plans do not exercise (max, unique_count, weighted sums and maxima, list and
# integer filters, a short dispute window, per-transaction percentage prices).

PLANS_DIR = Path(__file__).resolve().parents[2] / "plans"


def shipped_catalog():
    from billing.catalog import Catalog

    return Catalog.from_paths(PLANS_DIR)

EXTRAS_YAML = """
plan: agg-extras
version: 1
name: Aggregation extras (tests)
effective_from: 2026-01-01T00:00:00Z
currency: USD
meters:
  - key: max_units
    event_type: agent.step
    aggregation: max
    property: units
  - key: max_weighted
    event_type: agent.step
    aggregation: max
    property: units
    multipliers: {property: model, default: 2, values: {gpt-4o: "0.5", o3: 3}}
  - key: users
    event_type: llm.call
    aggregation: unique_count
    property: user
  - key: tasks_gold_silver
    event_type: agent.step
    aggregation: unique_count
    property: task
    filter: {tier: [gold, silver]}
  - key: weighted_output
    event_type: llm.call
    aggregation: sum
    property: output_tokens
    multipliers: {property: model, default: 1, values: {claude-opus-4-1: 5, gpt-4o-mini: "0.25", gpt-4o: 0}}
  - key: gold_steps
    event_type: agent.step
    aggregation: sum
    property: steps
    filter: {tier: gold}
  - key: level_two
    event_type: agent.step
    aggregation: count
    filter: {level: 2}
  - key: quick_disputes
    event_type: outcome
    aggregation: count
    disputes: {window_days: 2, id_property: outcome_id}
  - key: payments
    event_type: payment
    aggregation: sum
    property: amount
  - key: resolved_once
    event_type: outcome
    aggregation: unique_count
    property: outcome_id
    disputes: {window_days: 2, id_property: outcome_id}
charges:
  - key: users
    meter: users
    price: {model: per_unit, unit_price: "1"}
  - key: payments
    meter: payments
    price: {model: percentage, rate: "0.029", fixed_fee: "0.30", min_per_transaction: "0.50"}
"""


def extras_plan():
    from billing.catalog import parse_plan_text

    return parse_plan_text(EXTRAS_YAML, "agg-extras.yaml")


def catalog_with_extras():
    """Every shipped plan plus the extras (and the value aggregations' plan)."""
    from billing.catalog import Catalog
    from tests.support.level_plans import levels_plan

    shipped = shipped_catalog()
    return Catalog([*shipped.all(), extras_plan(), levels_plan()])




# A small plan for invoicing tests: a per-seat fee in arrears (exact time-weighted seats)
# plus $1 per ``request`` with no included units; monthly calendar periods.
SEATS_AND_REQUESTS_YAML = """
plan: seats-requests
version: 1
name: Seats in arrears + $1 a request (tests)
effective_from: 2026-01-01T00:00:00Z
currency: USD
billing: {interval: month, anchor: calendar}
fees:
  - type: per_seat
    key: seat
    name: Seat
    unit_price: "10.00"
    timing: arrears
meters:
  - key: requests
    name: Requests
    event_type: request
    aggregation: count
charges:
  - key: requests
    name: Requests
    meter: requests
    price: {model: per_unit, unit_price: "1.00"}
"""


def seats_requests_plan():
    from billing.catalog import parse_plan_text

    return parse_plan_text(SEATS_AND_REQUESTS_YAML, "seats-requests.yaml")


def invoicing_catalog():
    """Every shipped plan plus ``seats-requests``."""
    from billing.catalog import Catalog

    return Catalog([*shipped_catalog().all(), seats_requests_plan()])
