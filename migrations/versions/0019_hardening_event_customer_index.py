"""usage_event (customer_id, ts, id): one customer's events in time order

``GET /v1/events?customer=...`` pages by ``(ts, id)`` within one customer; without this
index SQLite walked the time index (every customer's events up to the page) or sorted the
customer's events for every page. On PostgreSQL the index is created on the partitioned
parent: every monthly partition gets its own (and a partition created later inherits it).

Revision ID: 0019_hardening
Revises: 0018_rollfast
Create Date: 2026-12-07 19:10:00
"""
from alembic import op


revision = '0019_hardening'
down_revision = '0018_rollfast'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_usage_event_customer_ts ON usage_event (customer_id, ts, id)")


def downgrade() -> None:
    op.execute("DROP INDEX ix_usage_event_customer_ts")
