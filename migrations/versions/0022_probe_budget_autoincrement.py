"""budget ids are never reused (SQLite AUTOINCREMENT)

On SQLite an INTEGER PRIMARY KEY without AUTOINCREMENT gives a new row the largest id plus
one, so a budget created after the newest one was deleted took its id: its crossing was
taken for the deleted budget's (``budget_alert`` subject ``budget:<id>``, the alert's outbox
key) and never alerted, and live holds' parts for the old budget counted against it. The
table is rebuilt with AUTOINCREMENT and its sequence starts past every id ever used that the
database still names (the rows, and the budget alerts' subjects). PostgreSQL's sequence
never reuses an id: nothing to do there.

Revision ID: 0022_probe_budget_autoincrement
Revises: 0021_rollread
Create Date: 2026-12-08 00:10:00
"""
from alembic import op

from billing.store.context_stamp import sqlite_ddl, sqlite_drop


revision = '0022_probe_budget_autoincrement'
down_revision = '0021_rollread'
branch_labels = None
depends_on = None


def _budget_triggers() -> None:
    """Rebuilding a SQLite table drops its triggers: the budget's context-version triggers
    (``billing.store.context_stamp``, migration 0020) are created again."""
    for statement in (*sqlite_drop(), *sqlite_ddl()):
        if "ctxv_budget_" in statement:
            op.execute(statement)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    with op.batch_alter_table('budget', recreate='always', table_kwargs={'sqlite_autoincrement': True}):
        pass
    _budget_triggers()
    used = bind.exec_driver_sql(
        "SELECT MAX(n) FROM (SELECT MAX(id) AS n FROM budget UNION ALL "
        "SELECT MAX(CAST(SUBSTR(subject, 8) AS INTEGER)) FROM budget_alert WHERE subject LIKE 'budget:%')"
    ).scalar()
    if used:
        bind.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = 'budget'")
        bind.exec_driver_sql("INSERT INTO sqlite_sequence (name, seq) VALUES ('budget', ?)", (int(used),))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    with op.batch_alter_table('budget', recreate='always'):
        pass
    _budget_triggers()
