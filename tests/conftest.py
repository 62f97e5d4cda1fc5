"""Fixtures shared by every test package.

- The CLI's process-wide caches (settings, engines, the plan catalog) start empty in each
  test, so a test that points the CLI at another database or plans directory never leaks
  into the next one.
- Databases parametrized over ``BACKENDS`` (``db_url``, ``empty_db_url``, ``module_db_url``,
  ``engine``, ``module_engine``): every test that uses them runs once on SQLite and once on
  PostgreSQL (see ``tests/support/db.py`` for when PostgreSQL is skipped or fails).
  Isolation: on SQLite every test gets a new file. On PostgreSQL creating a database costs
  about a second, so each test module gets its own fresh database (``billing_t_<uuid>``,
  dropped after the module) and every test starts from empty tables (``reset_database``:
  TRUNCATE ... RESTART IDENTITY).
- The quota and API tests' engines: ``sqlite_engine`` (a copy of a migrated template) and
  ``any_engine`` (that, then a fresh PostgreSQL database).
- Markers set here, from what a test uses: ``postgres`` on the PostgreSQL case of a test
  parametrized over the backends (or named for PostgreSQL), ``stripe`` on the tests that use
  the Stripe test server, ``nats`` on the tests that use a NATS JetStream stream
  (``nats_stream``: (server URL, a fresh stream name), ``tests/support/event_log.py``).
  Tests that reach PostgreSQL or Chromium another way, and ``slow`` tests, carry their
  marker in their module.
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from billing.store.db import downgrade
from tests.support.event_log import nats_server_url, temporary_stream
from tests.support.db import (BACKENDS, engine_for_url, postgres_database, postgres_server_url, reset_database,
                              sqlite_database)
from tests.support.quota import postgres_database as postgres_quota_database
from tests.support.quota import template_sqlite_engine


STRIPE_SERVER_FIXTURE = "stripe_env"
NATS_FIXTURE = "nats_stream"


def runs_on_postgres(item: pytest.Item) -> bool:
    """The PostgreSQL case of a backend parametrization (``db_url``, ``any_engine``, a
    ``backend`` argument, ...) or a test named for PostgreSQL."""
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    return "postgres" in params or "postgres" in item.name


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if runs_on_postgres(item):
            item.add_marker(pytest.mark.postgres)
        if STRIPE_SERVER_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.stripe)
        if NATS_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.nats)


@pytest.fixture(autouse=True)
def _fresh_cli_caches():
    from billing.cli import context
    from billing.config import get_settings
    from billing.store.db import engine_for

    caches = (get_settings, engine_for, context.catalog)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


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


@pytest.fixture
def sqlite_engine(tmp_path):
    yield from template_sqlite_engine(tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def any_engine(request, tmp_path):
    """The test on SQLite, then on a fresh PostgreSQL database (skipped without
    BILLING_TEST_POSTGRES_URL; a failure when BILLING_REQUIRE_POSTGRES=1)."""
    if request.param == "sqlite":
        yield from template_sqlite_engine(tmp_path)
        return
    postgres_server_url()
    with postgres_quota_database() as engine:
        yield engine


@pytest.fixture
def nats_stream():
    """(the NATS server URL, a fresh stream name) for one test; the stream is deleted after
    (skipped without BILLING_TEST_NATS_URL; a failure when BILLING_REQUIRE_NATS=1)."""
    url = nats_server_url()
    with temporary_stream(url) as stream:
        yield url, stream
