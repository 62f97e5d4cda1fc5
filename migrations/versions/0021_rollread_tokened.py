"""usage_rollup.tokened: the events of a row that carry a token count

The margin report splits provider cost into AI cost (events with token counts) and other
cost; a rollup row whose events all carry token counts, or none of them, answers that
exactly (``billing.reports.split_repository``). Rows written before this column are NULL
(unknown): the split reads their customers' events until ``billing db recount`` rebuilds
the rollups; a NULL stays NULL when later events add to the row.

Revision ID: 0021_rollread
Revises: 0020_coldctx
Create Date: 2026-12-07 19:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0021_rollread'
down_revision = '0020_coldctx'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('usage_rollup', sa.Column('tokened', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('usage_rollup') as batch:
        batch.drop_column('tokened')
