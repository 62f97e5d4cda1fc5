"""invoice_correction: each correction of a finalized invoice, keyed by what it corrects

A credit note, a standalone adjustment invoice or the adjustment lines on a subscription's
next invoice is the ``generation``-th correction of the invoice whose period it re-rates;
the primary key (corrected invoice, generation) lets only one document carry it. The
corrections made before this revision are recorded in document order: each document with
adjustment lines for an invoice's service window of the same subscription.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 06:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_EXISTING = """
INSERT INTO invoice_correction (corrected_invoice_id, generation, document_id)
SELECT corrected, ROW_NUMBER() OVER (PARTITION BY corrected ORDER BY document), document
FROM (SELECT DISTINCT original.id AS corrected, doc.id AS document
      FROM invoice doc
      JOIN invoice_line line ON line.invoice_id = doc.id AND line.kind = 'adjustment'
      JOIN invoice original ON original.subscription_id = doc.subscription_id
       AND original.period_start = line.service_start AND original.period_end = line.service_end
       AND original.kind = 'invoice' AND original.corrects_invoice_id IS NULL
       AND original.dedupe_key LIKE 'inv:%'
      WHERE doc.id <> original.id) AS found
"""


def upgrade() -> None:
    op.create_table('invoice_correction',
    sa.Column('corrected_invoice_id', sa.Integer(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('document_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['corrected_invoice_id'], ['invoice.id'], ),
    sa.ForeignKeyConstraint(['document_id'], ['invoice.id'], ),
    sa.PrimaryKeyConstraint('corrected_invoice_id', 'generation')
    )
    with op.batch_alter_table('invoice_correction', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_invoice_correction_document_id'), ['document_id'], unique=False)
    op.execute(_EXISTING)


def downgrade() -> None:
    with op.batch_alter_table('invoice_correction', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_invoice_correction_document_id'))
    op.drop_table('invoice_correction')
