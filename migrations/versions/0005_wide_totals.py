"""carry columns: running totals past 2^63 stay exact integers

Counters (units, cost), agent task usage (tokens, cost) and an invoice's provider cost
gain a ``*_carry`` column in units of 10^18 beside their low part (``billing.store.wide``).
Existing totals at or past 10^18 are split into the two parts. A counter that had already
overflowed (SQLite turned it into a float) cannot be split exactly: the counters are then
flagged ``counters_stale`` (invoicing rates from the events until ``billing db recount``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

WIDE = 10**18
_COLUMNS = {  # table -> (key columns, (low, carry) pairs)
    'usage_counter': (('customer_id', 'meter', 'period_start'), (('units_micro', 'units_carry'),
                                                                  ('cost_pico', 'cost_carry'))),
    'agent_task_usage': (('customer_id', 'task_id'), (('tokens', 'tokens_carry'), ('cost_pico', 'cost_carry'))),
    'invoice': (('id',), (('provider_cost_pico', 'provider_cost_carry'),)),
}


def upgrade() -> None:
    for table, (_keys, pairs) in _COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for _low, carry in pairs:
                batch_op.add_column(sa.Column(carry, sa.BigInteger(), nullable=False, server_default='0'))
    bind = op.get_bind()
    inexact = False
    for table, (keys, pairs) in _COLUMNS.items():
        for low, carry in pairs:
            rows = bind.execute(sa.text(f"SELECT {', '.join(keys)}, {low} FROM {table} "
                                        f"WHERE {low} >= {WIDE} OR {low} < 0")).all()
            for *key, value in rows:
                inexact = inexact or not isinstance(value, int)
                high, rest = divmod(int(value), WIDE)
                where = ' AND '.join(f"{k} = :k{i}" for i, k in enumerate(keys))
                bind.execute(sa.text(f"UPDATE {table} SET {low} = :low, {carry} = :carry WHERE {where}"),
                             {'low': rest, 'carry': high, **{f'k{i}': k for i, k in enumerate(key)}})
    if inexact:
        bind.execute(sa.text("DELETE FROM ledger_state WHERE name = 'counters_stale'"))
        bind.execute(sa.text("INSERT INTO ledger_state (name, value) VALUES ('counters_stale', 1)"))


def downgrade() -> None:
    # a counter past 10^18 does not fit the old columns: its low part stays, and the
    # counters are flagged stale (the old schema then rates from events until a recount)
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM usage_counter WHERE units_carry <> 0 OR cost_carry <> 0")).first():
        bind.execute(sa.text("DELETE FROM ledger_state WHERE name = 'counters_stale'"))
        bind.execute(sa.text("INSERT INTO ledger_state (name, value) VALUES ('counters_stale', 1)"))
    for table, (_keys, pairs) in _COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for _low, carry in pairs:
                batch_op.drop_column(carry)
