"""cost_price.extra: the price kinds beyond the five base rates

A price added to the ledger keeps its 1-hour cache write rate, context-length tiers,
service tier cards and per-unit prices as JSON in the data-file form
(``billing.costs.extra_fields``); ``{}`` for a price with none (every row added before).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 10:45:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cost_price') as batch:
        batch.add_column(sa.Column('extra', sa.Text(), nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('cost_price') as batch:
        batch.drop_column('extra')
