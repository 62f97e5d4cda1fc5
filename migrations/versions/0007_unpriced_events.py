"""unpriced and unmetered events are kept; prices added to the ledger; periods to re-rate after a re-cost

``usage_event.unpriced`` / ``unmetered``: why an event was stored though the cost book
could not price it or no plan meters its type (NULL for every event before this revision,
which were all priced and metered). ``cost_price``: prices added with ``billing costs add``
or the LiteLLM import. ``invoice_recost``: finalized invoices whose period was re-costed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

import billing.store.types


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_UNPRICED = "unpriced IS NOT NULL"
_FLAGGED = "unpriced IS NOT NULL OR unmetered IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table('usage_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unpriced', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True))
        batch_op.add_column(sa.Column('unmetered', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True))
    op.create_index('ix_usage_event_unpriced', 'usage_event', ['model', 'id'], unique=False,
                    postgresql_where=sa.text(_UNPRICED), sqlite_where=sa.text(_UNPRICED))
    op.create_index('ix_usage_event_flagged', 'usage_event', ['customer_id', 'id'], unique=False,
                    postgresql_where=sa.text(_FLAGGED), sqlite_where=sa.text(_FLAGGED))
    op.create_table('cost_price',
    sa.Column('model', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('effective_from', sa.Date(), nullable=False),
    sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('input', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('output', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('cache_read', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('cache_write', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('reasoning', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('batch_discount', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
    sa.Column('retrieved', sa.Date(), nullable=False),
    sa.Column('aliases', sqlmodel.sql.sqltypes.AutoString(length=4000), nullable=False),
    sa.Column('origin', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('added_at', billing.store.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('model', 'effective_from')
    )
    op.create_table('invoice_recost',
    sa.Column('invoice_id', sa.Integer(), nullable=False),
    sa.Column('marks', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['invoice_id'], ['invoice.id'], ),
    sa.PrimaryKeyConstraint('invoice_id')
    )


def downgrade() -> None:
    op.drop_table('invoice_recost')
    op.drop_table('cost_price')
    op.drop_index('ix_usage_event_flagged', table_name='usage_event')
    op.drop_index('ix_usage_event_unpriced', table_name='usage_event')
    with op.batch_alter_table('usage_event', schema=None) as batch_op:
        batch_op.drop_column('unmetered')
        batch_op.drop_column('unpriced')
