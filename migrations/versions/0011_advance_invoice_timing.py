"""invoice_line.billed_in_advance, customer.invoice_when_due_reaches (issue 14, items 1-2)

A plan with ``billing.advance_fees: at_period_start`` invoices its advance fees (flat fees,
the seats held at a period's start) when the period starts; those lines carry their
service period like any other and this flag, so a re-rating of a closed period (late
events) compares only its arrears lines (``billing.invoicing.late``). False on every line
written before.

``customer.invoice_when_due_reaches``: a customer's own invoicing threshold (decimal text),
overriding its plan's (``billing.invoicing.thresholds``); NULL: the plan's.

Revision ID: 0011_advance
Revises: 0010_contracts
Create Date: 2026-12-07 12:50:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0011_advance'
down_revision = '0010_contracts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('invoice_line') as batch:
        batch.add_column(sa.Column('billed_in_advance', sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table('customer') as batch:
        batch.add_column(sa.Column('invoice_when_due_reaches', sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('customer') as batch:
        batch.drop_column('invoice_when_due_reaches')
    with op.batch_alter_table('invoice_line') as batch:
        batch.drop_column('billed_in_advance')
