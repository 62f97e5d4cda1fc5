"""usage_rollup: hourly usage per customer, type, model and dimension values

Reports read these rollups where they are exact (``billing.ledger.rollups``). A database
that already holds events has no rollups for them: it is flagged ``rollups_stale`` and the
reports read the events until ``billing db recount`` rebuilds the rollups.

Revision ID: 0017_rollups
Revises: 0016_budgets
Create Date: 2026-12-07 16:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0017_rollups'
down_revision = '0016_budgets'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('usage_rollup',
    sa.Column('customer_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('hour', sa.BigInteger(), nullable=False),
    sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('dims', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
    sa.Column('events', sa.BigInteger(), nullable=False),
    sa.Column('cost_pico', sa.BigInteger(), nullable=False),
    sa.Column('cost_carry', sa.BigInteger(), nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cache_read_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cache_write_tokens', sa.BigInteger(), nullable=False),
    sa.Column('reasoning_tokens', sa.BigInteger(), nullable=False),
    sa.Column('sums', sa.Text(), nullable=False),
    sa.Column('rounded', sa.BigInteger(), nullable=False),
    sa.Column('odd', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('customer_id', 'hour', 'type', 'model', 'dims')
    )
    op.create_table('rollup_dimension',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.execute("INSERT INTO rollup_dimension (name) VALUES ('feature'), ('task'), ('user')")
    if op.get_bind().execute(sa.text("SELECT 1 FROM usage_event LIMIT 1")).first() is not None:
        op.execute("INSERT INTO ledger_state (name, value) VALUES ('rollups_stale', 1)")


def downgrade() -> None:
    op.execute("DELETE FROM ledger_state WHERE name = 'rollups_stale'")
    op.drop_table('rollup_dimension')
    op.drop_table('usage_rollup')
