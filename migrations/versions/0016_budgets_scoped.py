"""budget: budgets at every scope; quota_hold.budgets: what a hold adds to each

A customer's budgets (issue 15, item 2): a limit on the billed amount, provider cost or
units of the customer or of one property value of its events, over a reset window, soft
or hard (``billing.quota.budgets``). A hold records its part in each budget it counts
against, so concurrent reservations cannot overshoot a hard budget.

Revision ID: 0016_budgets
Revises: 0015_webhooks
Create Date: 2026-12-07 16:20:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0016_budgets'
down_revision = '0015_webhooks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'budget',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('customer_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('measure', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('amount', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column('reset_window', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('enforcement', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column('policy', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('scope_property', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('scope_value', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column('meter', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True),
        sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column('timezone', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('created_at', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['customer_id'], ['customer.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('customer_id', 'name', name='uq_budget_customer_name'),
    )
    with op.batch_alter_table('quota_hold') as batch:
        batch.add_column(sa.Column('budgets', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('quota_hold') as batch:
        batch.drop_column('budgets')
    op.drop_table('budget')
