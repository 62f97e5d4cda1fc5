"""Migration 0022 (budget ids never reused) on a database made before it: the newest budget
deleted before the upgrade, its alert row left; after the upgrade the next budget takes a
new id (past the rows and the alert subjects), a deleted one's id is not taken again, and
downgrade / upgrade keep the rows. (PostgreSQL: its sequence, the same outcome.)"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import text

from billing.ledger.accounts import Accounts
from billing.store.db import downgrade, upgrade
from tests.support.db import engine_for_url
from tests.support.ledger import CATALOG


def _next_budget_id(engine) -> int:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO budget (customer_id, name, measure, amount, reset_window, enforcement, "
                          "policy, created_at) VALUES ('acme', :n, 'cost', '1', 'daily', 'soft', 'alert', 0)"),
                     {"n": uuid.uuid4().hex})
        return conn.execute(text("SELECT MAX(id) FROM budget")).scalar()


def test_the_upgrade_starts_budget_ids_past_every_id_in_use(empty_db_url):
    url = empty_db_url
    upgrade(url, "0021_rollread")
    with engine_for_url(url) as engine:
        Accounts(engine, CATALOG).create_customer("acme", now=datetime(2026, 10, 1, tzinfo=UTC))
        assert [_next_budget_id(engine) for _ in range(3)] == [1, 2, 3]
        with engine.begin() as conn:
            conn.execute(text('INSERT INTO budget_alert (customer_id, period_start, subject, threshold, value, '
                              '"limit", fired_at) VALUES (\'acme\', 0, \'budget:3\', \'100\', \'1.1\', \'1\', 0)'))
            conn.execute(text("DELETE FROM budget WHERE id = 3"))
    upgrade(url)
    with engine_for_url(url) as engine:
        assert _next_budget_id(engine) == 4
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM budget WHERE id = 4"))
        assert _next_budget_id(engine) == 5
    downgrade(url, "0021_rollread")
    upgrade(url)
    with engine_for_url(url) as engine, engine.connect() as conn:
        assert conn.execute(text("SELECT id FROM budget ORDER BY id")).scalars().all() == [1, 2, 5]


def _context_version(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT context_version FROM customer WHERE id = 'acme'")).scalar()


def test_the_rebuilt_budget_table_keeps_its_context_version_triggers(empty_db_url):
    """Rebuilding a SQLite table drops its triggers: without the budget's context-version
    triggers a budget added by another server is not seen by a cached quota context."""
    url = empty_db_url
    upgrade(url, "0021_rollread")
    with engine_for_url(url) as engine:
        Accounts(engine, CATALOG).create_customer("acme", now=datetime(2026, 10, 1, tzinfo=UTC))
    for step in (lambda: upgrade(url), lambda: (downgrade(url, "0021_rollread"), upgrade(url))):
        step()
        with engine_for_url(url) as engine:
            before = _context_version(engine)
            _next_budget_id(engine)
            assert _context_version(engine) == before + 1
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM budget WHERE id = (SELECT MAX(id) FROM budget)"))
            assert _context_version(engine) == before + 2
