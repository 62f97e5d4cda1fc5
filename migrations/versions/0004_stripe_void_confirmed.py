"""invoice.stripe_void_confirmed_at: void documents Stripe agrees with are not re-checked

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:40:00
"""
from alembic import op
import sqlalchemy as sa

import billing.store.types


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('invoice', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stripe_void_confirmed_at', billing.store.types.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('invoice', schema=None) as batch_op:
        batch_op.drop_column('stripe_void_confirmed_at')
