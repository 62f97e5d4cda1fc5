"""ledger state flags, event counts of invoice rechecks

The running counters gain a row per customer period for every event (meter ``*``). A
database that already holds events lacks those rows: it is flagged ``counters_stale`` so
invoicing rates from events until ``billing db recount`` rebuilds the counters.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 18:30:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ledger_state',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('invoice_recheck', schema=None) as batch_op:
        batch_op.add_column(sa.Column('events', sa.BigInteger(), nullable=True))
    if op.get_bind().execute(sa.text("SELECT 1 FROM usage_event LIMIT 1")).first() is not None:
        op.execute("INSERT INTO ledger_state (name, value) VALUES ('counters_stale', 1)")


def downgrade() -> None:
    with op.batch_alter_table('invoice_recheck', schema=None) as batch_op:
        batch_op.drop_column('events')
    op.drop_table('ledger_state')
