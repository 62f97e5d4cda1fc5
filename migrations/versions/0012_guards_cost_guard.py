"""customer.cost_guard: a customer's own cost guardrails

A customer's override of its plan's ``cost_guard`` (issue 15), as the JSON of
``billing.catalog.guards.CostGuard``; NULL: the plan's guards apply.

Revision ID: 0012_guards
Revises: 0011_advance
Create Date: 2026-12-07 13:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0012_guards'
down_revision = '0011_advance'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('customer') as batch:
        batch.add_column(sa.Column('cost_guard', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('customer') as batch:
        batch.drop_column('cost_guard')
