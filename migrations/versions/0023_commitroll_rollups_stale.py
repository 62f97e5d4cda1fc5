"""flag the hourly rollups stale where quota commits stored events they lack

Before this version a quota commit (``POST /v1/reservations/{id}/commit``, ``Quota.commit``,
``guarded_call``) stored its event, the counters and task usage, but not the hourly rollups
(``usage_rollup``); since then it adds to them in its transaction
(``billing.reservations.commit_rollups``). A database where events came through that door
has rollups without them: the flag ``rollups_stale`` (as migration 0017 set it for events
stored before the rollups existed) makes the reports read the events until ``billing db
recount`` rebuilds the rollups. Set when a committed hold exists, or when the rollups count
fewer events than the ledger holds (holds may have been pruned); nothing to do otherwise.

Revision ID: 0023_commitroll
Revises: 0022_probe_budget_autoincrement
Create Date: 2026-12-08 01:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0023_commitroll'
down_revision = '0022_probe_budget_autoincrement'
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    committed = bind.execute(sa.text("SELECT 1 FROM quota_hold WHERE status = 'committed' LIMIT 1")).first()
    short = False
    if committed is None:
        rolled = bind.execute(sa.text("SELECT COALESCE(SUM(events), 0) FROM usage_rollup")).scalar()
        stored = bind.execute(sa.text("SELECT COUNT(*) FROM usage_event")).scalar()
        short = int(rolled) < int(stored)
    if committed is not None or short:
        op.execute("DELETE FROM ledger_state WHERE name = 'rollups_stale'")
        op.execute("INSERT INTO ledger_state (name, value) VALUES ('rollups_stale', 1)")


def downgrade() -> None:
    pass  # the flag is right for the code before this version too (its commits add no rollups)
