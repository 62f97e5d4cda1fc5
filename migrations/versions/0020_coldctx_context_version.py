"""customer.context_version: a change stamp of the quota context, bumped by triggers

Every write to a row a quota context is made of (subscription, seat_change,
contract_override, invoice dunning, credit_grant, credit_burn, budget, the customer's
timezone and cost guard) bumps the customer's ``context_version`` in the same transaction
(``billing.store.context_stamp``); quota decisions read it with their usage and reload a
cached context whose version differs.

Revision ID: 0020_coldctx
Revises: 0019_hardening
Create Date: 2026-12-07 19:00:00
"""
import sqlalchemy as sa
from alembic import op

from billing.store.context_stamp import COLUMN, ddl, drop_ddl

revision = '0020_coldctx'
down_revision = '0019_hardening'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customer") as batch:
        batch.add_column(sa.Column(COLUMN, sa.BigInteger(), nullable=False, server_default="0"))
    for statement in ddl(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_ddl(op.get_bind().dialect.name):
        op.execute(statement)
    with op.batch_alter_table("customer") as batch:
        batch.drop_column(COLUMN)
