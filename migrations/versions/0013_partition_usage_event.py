"""usage_event partitioned by month on PostgreSQL; usage_event_key holds idempotency

PostgreSQL only (SQLite keeps its one table): the events move to a table ``PARTITION BY
RANGE (ts)`` with a partition per calendar month (UTC) named ``usage_event_yYYYYmMM``; its
keys include ``ts`` (primary key ``(id, ts, customer_id)``, unique ``(customer_id,
event_id, ts)``), and ``usage_event_key`` (primary key ``(customer_id, event_id)``, where
every insert path claims an event's key first) keeps the client's idempotency key unique
across months (``billing.store.partitions``). The id sequence carries over (ids keep increasing: the
invoicing watermarks stay valid). Partitions: every month holding events, and the previous,
current and next three months.

Revision ID: 0013_partition
Revises: 0012_guards
Create Date: 2026-12-07 16:10:00
"""
from datetime import UTC, datetime

from alembic import op


revision = '0013_partition'
down_revision = '0012_guards'
branch_labels = None
depends_on = None

_COLUMNS = "id, customer_id, event_id, type, ts, properties, model, cost_pico, unpriced, unmetered"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(month: int) -> int:
    moment = datetime(month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return int((moment - _EPOCH).total_seconds()) * 1_000_000


def _indexes() -> None:
    op.execute("CREATE INDEX ix_usage_event_ts_customer ON usage_event (ts, customer_id)")
    op.execute("CREATE INDEX ix_usage_event_unpriced ON usage_event (model, id) WHERE unpriced IS NOT NULL")
    op.execute("CREATE INDEX ix_usage_event_flagged ON usage_event (customer_id, id) "
               "WHERE unpriced IS NOT NULL OR unmetered IS NOT NULL")


def _rename_old() -> None:
    op.execute("ALTER TABLE usage_event RENAME TO usage_event_old")
    for index in ("ix_usage_event_ts_customer", "ix_usage_event_unpriced", "ix_usage_event_flagged"):
        op.execute(f"ALTER INDEX {index} RENAME TO {index}_old")
    op.execute("ALTER TABLE usage_event_old RENAME CONSTRAINT uq_usage_event_customer_event TO uq_usage_event_old")
    op.execute("ALTER TABLE usage_event_old RENAME CONSTRAINT usage_event_pkey TO usage_event_old_pkey")


_CREATE = """CREATE TABLE usage_event (
    id bigint NOT NULL DEFAULT nextval('usage_event_id_seq'),
    customer_id varchar(200) NOT NULL,
    event_id varchar(200) NOT NULL,
    type varchar(100) NOT NULL,
    ts bigint NOT NULL,
    properties json NOT NULL,
    model varchar(200),
    cost_pico bigint NOT NULL,
    unpriced varchar(500),
    unmetered varchar(500)"""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    _rename_old()
    op.execute(_CREATE + ",\n    CONSTRAINT usage_event_pkey PRIMARY KEY (id, ts, customer_id),\n"
               "    CONSTRAINT uq_usage_event_customer_event UNIQUE (customer_id, event_id, ts)\n"
               ") PARTITION BY RANGE (ts)")
    op.execute("ALTER SEQUENCE usage_event_id_seq OWNED BY usage_event.id")
    _indexes()
    months = {int(m) for m in bind.exec_driver_sql(
        "SELECT DISTINCT (EXTRACT(YEAR FROM t) * 12 + EXTRACT(MONTH FROM t) - 1)::int FROM "
        "(SELECT to_timestamp(ts / 1000000.0) AT TIME ZONE 'UTC' AS t FROM usage_event_old) s").scalars()}
    now = datetime.now(UTC)
    current = now.year * 12 + now.month - 1
    months |= set(range(current - 1, current + 4))
    for month in sorted(months):
        op.execute(f"CREATE TABLE usage_event_y{month // 12:04d}m{month % 12 + 1:02d} PARTITION OF usage_event "
                   f"FOR VALUES FROM ({_us(month)}) TO ({_us(month + 1)})")
    op.execute("CREATE TABLE usage_event_key (customer_id varchar(200) NOT NULL, event_id varchar(200) NOT NULL, "
               "ts bigint NOT NULL, CONSTRAINT usage_event_key_pkey PRIMARY KEY (customer_id, event_id))")
    op.execute("INSERT INTO usage_event_key (customer_id, event_id, ts) SELECT customer_id, event_id, ts "
               "FROM usage_event_old")
    op.execute(f"INSERT INTO usage_event ({_COLUMNS}) SELECT {_COLUMNS} FROM usage_event_old")
    op.execute("DROP TABLE usage_event_old")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE usage_event RENAME TO usage_event_parted")
    for index in ("ix_usage_event_ts_customer", "ix_usage_event_unpriced", "ix_usage_event_flagged"):
        op.execute(f"ALTER INDEX {index} RENAME TO {index}_parted")
    op.execute("ALTER TABLE usage_event_parted RENAME CONSTRAINT uq_usage_event_customer_event TO uq_parted")
    op.execute("ALTER TABLE usage_event_parted RENAME CONSTRAINT usage_event_pkey TO usage_event_parted_pkey")
    op.execute(_CREATE + ",\n    CONSTRAINT usage_event_pkey PRIMARY KEY (id),\n"
               "    CONSTRAINT uq_usage_event_customer_event UNIQUE (customer_id, event_id))")
    op.execute("ALTER SEQUENCE usage_event_id_seq OWNED BY usage_event.id")
    _indexes()
    op.execute(f"INSERT INTO usage_event ({_COLUMNS}) SELECT {_COLUMNS} FROM usage_event_parted ORDER BY id")
    op.execute("DROP TABLE usage_event_parted")  # (its partitions go with it)
    op.execute("DROP TABLE usage_event_key")
