"""contracts: dated plan overrides, coupons and their redemptions, term commitments, add-ons

A subscription's contract on top of its plan version (``billing.contracts``): overrides of
a price, included amount, cap or fee for a time (``contract_override``), coupons
(``coupon``) redeemed on a subscription (``coupon_redemption``), and commitments over a
contract term owed pro rata by its periods (``term_commitment``), add-on subscriptions rated
into the base subscription's invoices (``addon_subscription``). New tables only.

Revision ID: 0010_contracts
Revises: 0009
Create Date: 2026-12-07 12:40:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel
import billing.store.types


revision = '0010_contracts'
down_revision = '0009'
branch_labels = None
depends_on = None


def _at(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, billing.store.types.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table('contract_override',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    sa.Column('path', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    _at('starts_at'), _at('ends_at', True), _at('created_at'),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscription.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('contract_override', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contract_override_subscription_id'), ['subscription_id'], unique=False)
    op.create_table('coupon',
    sa.Column('code', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('percent', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
    sa.Column('amount_minor', sa.BigInteger(), nullable=True),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=True),
    sa.Column('duration', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('periods', sa.Integer(), nullable=True),
    sa.Column('applies_to', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    _at('created_at'),
    sa.PrimaryKeyConstraint('code')
    )
    op.create_table('coupon_redemption',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('coupon_code', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    _at('redeemed_at'), _at('ends_at', True), _at('created_at'),
    sa.ForeignKeyConstraint(['coupon_code'], ['coupon.code'], ),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscription.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('coupon_code', 'subscription_id', name='uq_coupon_redemption')
    )
    with op.batch_alter_table('coupon_redemption', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_coupon_redemption_subscription_id'), ['subscription_id'], unique=False)
    op.create_table('term_commitment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    _at('starts_at'), _at('ends_at'),
    sa.Column('applies_to', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    _at('created_at'),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscription.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('term_commitment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_term_commitment_subscription_id'), ['subscription_id'], unique=False)
    op.create_table('addon_subscription',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    sa.Column('plan_id', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('plan_version', sa.Integer(), nullable=False),
    _at('started_at'), _at('ended_at', True), _at('created_at'),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscription.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('addon_subscription', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_addon_subscription_subscription_id'), ['subscription_id'], unique=False)


def downgrade() -> None:
    for table in ('addon_subscription', 'term_commitment', 'coupon_redemption', 'contract_override'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f'ix_{table}_subscription_id'))
    op.drop_table('addon_subscription')
    op.drop_table('term_commitment')
    op.drop_table('coupon_redemption')
    op.drop_table('coupon')
    op.drop_table('contract_override')
