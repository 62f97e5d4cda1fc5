"""Benchmark helpers: fresh databases (SQLite file or a new PostgreSQL database)."""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import contextmanager

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def fresh_database(backend: str):
    """Yield a URL of an empty, migrated database; drop it afterwards."""
    from billing.store.db import upgrade

    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{os.path.join(tmp, 'bench.db')}"
            upgrade(url)
            yield url
        return
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(os.environ.get("BILLING_BENCH_POSTGRES_URL") or os.environ.get("BILLING_TEST_POSTGRES_URL") or DEFAULT_PG)
    name = f"billing_bench_{uuid.uuid4().hex[:10]}"
    admin = base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        from billing.store.db import engine_for

        engine_for.cache_clear()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
