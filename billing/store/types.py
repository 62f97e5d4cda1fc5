"""Column types shared by the ledger tables: timezone-aware UTC instants on every database."""

from __future__ import annotations

from datetime import UTC

from sqlalchemy import BigInteger, DateTime, Integer
from sqlalchemy.types import TypeDecorator

from billing.instants import EPOCH, from_us, to_us  # the ledger's instants, importable from here too

__all__ = ["EPOCH", "BigIntPK", "UTCDateTime", "from_us", "to_us"]

# BIGINT on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the rowid (autoincrement).
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator):
    """Stores UTC (naive on SQLite, timestamptz on PostgreSQL); always returns aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
