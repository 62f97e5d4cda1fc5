"""Reads through the raw database driver (no SQLAlchemy row objects: cheap by the hundred
thousand), with datetimes as the ORM returns them: aware UTC."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache

from sqlalchemy import Connection


def datetime_reader(conn: Connection) -> Callable[[object], datetime | None]:
    """How to read a datetime column through the raw driver: aware UTC, as the ORM returns it."""
    return _pg_datetime if conn.dialect.name == "postgresql" else _sqlite_datetime


@lru_cache(maxsize=65536)
def _sqlite_datetime(value: str | None) -> datetime | None:  # stored as naive UTC text
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


@lru_cache(maxsize=65536)
def _pg_datetime(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def driver_rows(conn: Connection, sql: str, params: Sequence = ()) -> list[tuple]:
    """The rows of ``sql`` (``?`` placeholders on both databases) through the driver's cursor."""
    if conn.dialect.name == "postgresql":
        sql = sql.replace("?", "%s")
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(sql, list(params))
        return cursor.fetchall()
    finally:
        cursor.close()
