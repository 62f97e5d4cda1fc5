"""Database fixtures shared by the ledger / invoicing / migration tests.

Import them explicitly in a test module (``from conftest_db import db_url, engine``) so
they are parametrized over ``BACKENDS`` there: every test that uses them runs once on
SQLite and once on PostgreSQL (see ``db.py`` for when PostgreSQL is skipped or fails).

Isolation: on SQLite every test gets a new file. On PostgreSQL creating a database costs
about a second, so each test module gets its own fresh database (``billing_t_<uuid>``,
dropped after the module) and every test starts from empty tables (``reset_database``:
TRUNCATE ... RESTART IDENTITY).
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from billing.ledger.db import downgrade
from db import BACKENDS, engine_for_url, postgres_database, postgres_server_url, reset_database, sqlite_database


_PG_DATABASES: dict[tuple[str, bool], str] = {}


def _pg_module_database(request, migrate: bool) -> str:
    """The test module's own fresh PostgreSQL database (created on first use, dropped when
    the module's tests are done)."""
    module = request.node.getparent(pytest.Module)
    key = (module.nodeid, migrate)
    if key not in _PG_DATABASES:
        stack = ExitStack()
        _PG_DATABASES[key] = stack.enter_context(postgres_database(postgres_server_url(), migrate=migrate))

        def drop() -> None:
            _PG_DATABASES.pop(key, None)
            stack.close()

        module.addfinalizer(drop)
    return _PG_DATABASES[key]


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """An empty database migrated to head, for one test."""
    if request.param == "sqlite":
        with sqlite_database(tmp_path) as url:
            yield url
        return
    url = _pg_module_database(request, migrate=True)
    reset_database(url)
    yield url


@pytest.fixture(params=BACKENDS)
def empty_db_url(request, tmp_path):
    """A database with no schema at all (for migration tests)."""
    if request.param == "sqlite":
        with sqlite_database(tmp_path, migrate=False) as url:
            yield url
        return
    url = _pg_module_database(request, migrate=False)
    downgrade(url, "base")
    yield url


@pytest.fixture(scope="module", params=BACKENDS)
def module_db_url(request, tmp_path_factory):
    """A database migrated to head shared by the tests of one module (hypothesis tests use
    it and scope each example's data by a fresh customer id). On PostgreSQL it is the
    module's database, which a ``db_url`` test in the same module empties: do not rely on
    its data across tests."""
    if request.param == "sqlite":
        with sqlite_database(tmp_path_factory.mktemp("db")) as url:
            yield url
        return
    yield _pg_module_database(request, migrate=True)


@pytest.fixture
def engine(db_url):
    with engine_for_url(db_url) as eng:
        yield eng


@pytest.fixture(scope="module")
def module_engine(module_db_url):
    with engine_for_url(module_db_url) as eng:
        yield eng
