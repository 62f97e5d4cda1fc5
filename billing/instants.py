"""Instants as the ledger stores them: integer microseconds since the Unix epoch, UTC (pure:
no database, so a process that only validates events need not load a database toolkit)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(value: datetime) -> int:
    """Aware instant -> integer microseconds since the Unix epoch (how events store time)."""
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)
