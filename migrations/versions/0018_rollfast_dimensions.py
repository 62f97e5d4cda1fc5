"""rollup_dimension: feature only by default (user and task through BILLING_ROLLUP_DIMENSIONS)

A key per value of ``user`` or ``task`` makes nearly every event its own rollup row; a
deployment that wants those breakdowns from the rollups names them in
``BILLING_ROLLUP_DIMENSIONS`` and runs ``billing db recount``. Rows written before keep their
``dims`` (a breakdown by ``feature`` groups them with the new ones alike); reports by
``user`` or ``task`` read the events, exactly, until then.

Revision ID: 0018_rollfast
Revises: 0017_rollups
Create Date: 2026-12-07 17:30:00
"""
from alembic import op


revision = '0018_rollfast'
down_revision = '0017_rollups'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM rollup_dimension WHERE name IN ('task', 'user')")


def downgrade() -> None:
    for name in ("task", "user"):
        op.execute(f"INSERT INTO rollup_dimension (name) SELECT '{name}' WHERE NOT EXISTS "
                   f"(SELECT 1 FROM rollup_dimension WHERE name = '{name}')")
