"""Engines, sessions and schema migrations (Alembic) for SQLite and PostgreSQL."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session

import billing

MIGRATIONS_DIR = Path(billing.__file__).resolve().parent.parent / "migrations"


def normalize_url(url: str) -> str:
    """Accept postgresql:// and postgres:// URLs and use psycopg 3 for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


SQLITE_MMAP = 1 << 30  # bytes of a SQLite file read through a memory map (``PRAGMA mmap_size``)


def make_engine(url: str, *, sqlite_mmap: int = SQLITE_MMAP, sqlite_cache_kib: int = 65536, **kwargs) -> Engine:
    """An engine for ``url``. SQLite: WAL, a page cache of ``sqlite_cache_kib`` KiB, and reads
    through a memory map of up to ``sqlite_mmap`` bytes of the file (0: none; a long import
    turns it off, so its resident memory does not grow with the database file it maps)."""
    url = normalize_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the writer
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see begin below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute(f"PRAGMA cache_size=-{int(sqlite_cache_kib)}")  # index pages stay hot
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.execute(f"PRAGMA mmap_size={int(sqlite_mmap)}")  # scans read pages straight from the mapping
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # take the write lock up front: no upgrade deadlocks
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, pool_pre_ping=True, **kwargs)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    return make_engine(url)


def session(engine: Engine) -> Session:
    return Session(engine, expire_on_commit=False)


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    """The newest migration this version of the code has."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None: never migrated)."""
    from sqlalchemy import inspect

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def schema_problem(engine: Engine) -> str | None:
    """None when the database's schema is this code's; else one line saying what to run."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return None
    if current is None:
        return "the database has no billing tables yet: run `billing db upgrade` first"
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        known = ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(current) is not None
    except CommandError:
        known = False
    if not known:
        return (f"the database is at migration {current}, which this version of billing does not know "
                f"(it was migrated by a newer one): upgrade billing, or `billing db downgrade` with that version")
    return f"the database is at migration {current}, this version of billing needs {head}: run `billing db upgrade`"
