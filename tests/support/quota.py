"""The quota and API tests' plans, clock and databases: the shipped plans plus a plan that
blocks at 100 requests, a fixed clock, a migrated SQLite template copied per test and fresh
PostgreSQL databases. The fixtures built on them (``sqlite_engine``, ``any_engine``) are in
``tests/conftest.py``."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import SQLModel

import billing.store.operational_models  # noqa: F401  (registers the quota tables)
from billing.catalog import Catalog, parse_plan_text
from billing.store.db import make_engine, upgrade
from tests.support import db

PLANS = Path(__file__).resolve().parents[2] / "plans"
T0 = datetime(2026, 10, 1, tzinfo=UTC)
NOW = datetime(2026, 10, 10, 12, 0, tzinfo=UTC)

BLOCK_PLAN = """
plan: blocky
name: Block at 100
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: requests, event_type: request, aggregation: count}
  - {key: steps, event_type: agent.step, aggregation: count}
charges:
  - key: requests
    meter: requests
    included: {pooled: 100}
    on_exhaustion: {policy: block}
agent_limits: {max_steps: 3, max_tokens: 1000}
"""


def catalog() -> Catalog:
    plans = list(Catalog.from_paths(PLANS).all())
    plans.append(parse_plan_text(BLOCK_PLAN, "blocky.yaml"))
    return Catalog(plans)


def make_db(url: str):
    upgrade(url)
    engine = make_engine(url)
    SQLModel.metadata.create_all(engine)
    return engine


@contextmanager
def postgres_database():
    """A fresh PostgreSQL database on BILLING_TEST_POSTGRES_URL's server as a ``make_db``
    engine (``tests.support.db.postgres_database``; dropped after)."""
    with db.postgres_database(db.postgres_server_url(), migrate=False) as url:
        engine = make_db(url)
        try:
            yield engine
        finally:
            engine.dispose()


_TEMPLATE: list[Path] = []


def _template() -> Path:
    """A migrated SQLite file built once per test run (migrations are the slow part)."""
    if not _TEMPLATE:
        import atexit
        import shutil
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="billing_quota_template_"))
        atexit.register(shutil.rmtree, folder, True)
        path = folder / "template.db"
        make_db(f"sqlite:///{path}").dispose()  # the last close checkpoints the WAL into the file
        _TEMPLATE.append(path)
    return _TEMPLATE[0]


def template_sqlite_engine(tmp_path):
    """An engine on a copy of the migrated SQLite template in ``tmp_path`` (disposed after)."""
    import shutil

    path = tmp_path / "quota.db"
    template = _template()
    shutil.copyfile(template, path)
    for suffix in ("-wal", "-shm"):
        if Path(f"{template}{suffix}").exists():
            shutil.copyfile(f"{template}{suffix}", f"{path}{suffix}")
    engine = make_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


class Clock:
    def __init__(self, now: datetime = NOW):
        self.now = now

    def __call__(self) -> datetime:
        return self.now
