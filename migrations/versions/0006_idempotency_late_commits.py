"""idempotency_record (Idempotency-Key of HTTP POSTs) and quota_late_commit (commits after expiry)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 06:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('idempotency_record',
    sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('fingerprint', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('locked_until', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('response_headers', sa.Text(), nullable=True),
    sa.Column('response_body', sa.LargeBinary(), nullable=True),
    sa.PrimaryKeyConstraint('scope', 'key')
    )
    with op.batch_alter_table('idempotency_record', schema=None) as batch_op:
        batch_op.create_index('ix_idempotency_record_created', ['created_at'], unique=False)

    op.create_table('quota_late_commit',
    sa.Column('hold_id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('customer_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('meter', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('units_micro', sa.BigInteger(), nullable=False),
    sa.Column('expired_at', sa.BigInteger(), nullable=False),
    sa.Column('committed_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('hold_id')
    )
    with op.batch_alter_table('quota_late_commit', schema=None) as batch_op:
        batch_op.create_index('ix_quota_late_commit_at', ['committed_at'], unique=False)
        batch_op.create_index('ix_quota_late_commit_customer', ['customer_id', 'committed_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('quota_late_commit', schema=None) as batch_op:
        batch_op.drop_index('ix_quota_late_commit_customer')
        batch_op.drop_index('ix_quota_late_commit_at')
    op.drop_table('quota_late_commit')
    with op.batch_alter_table('idempotency_record', schema=None) as batch_op:
        batch_op.drop_index('ix_idempotency_record_created')
    op.drop_table('idempotency_record')
