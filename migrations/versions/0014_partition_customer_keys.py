"""quota_hold and quota_late_commit keys include customer_id (Citus readiness)

A table distributed by customer needs the customer in each primary and unique key
(``billing.store.distribution``): ``quota_hold`` (id) -> (id, customer_id),
``quota_late_commit`` (hold_id) -> (hold_id, customer_id). Hold ids stay unique on their
own (random), and lookups by id keep the key's leading column.

Revision ID: 0014_partition_keys
Revises: 0013_partition
Create Date: 2026-12-07 16:40:00
"""
import warnings

from alembic import op
from sqlalchemy.exc import SAWarning


revision = '0014_partition_keys'
down_revision = '0013_partition'
branch_labels = None
depends_on = None

_KEYS = {"quota_hold": ("quota_hold_pkey", ["id"]), "quota_late_commit": ("quota_late_commit_pkey", ["hold_id"])}


def _rekey(table: str, columns: list[str]) -> None:
    name = _KEYS[table][0]
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} PRIMARY KEY ({', '.join(columns)})")
        return
    with warnings.catch_warnings():  # (SQLAlchemy notes the reflected key differs: that is the point)
        warnings.simplefilter("ignore", SAWarning)
        with op.batch_alter_table(table, recreate="always") as batch:
            batch.create_primary_key(name, columns)


def upgrade() -> None:
    for table, (_name, columns) in _KEYS.items():
        _rekey(table, [*columns, "customer_id"])


def downgrade() -> None:
    for table, (_name, columns) in _KEYS.items():
        _rekey(table, columns)
