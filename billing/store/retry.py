"""Running a transaction again when the database aborted it for concurrency's sake.

PostgreSQL aborts a transaction that lost a deadlock (SQLSTATE 40P01) or a serialization
conflict (40001), and SQLite answers "database is locked" when its busy timeout ran out.
Nothing of such a transaction was written, so running it again from the start is safe; the
caller must rebuild whatever it derived inside the failed attempt. ``Retry`` says which
errors those are and how long to wait between attempts (exponential backoff with jitter,
so two writers that collided do not collide again in lockstep).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def is_retryable(exc: BaseException) -> bool:
    """A deadlock, a serialization failure, or a locked SQLite database, raised by the driver
    directly or wrapped by SQLAlchemy."""
    seen = 0
    while exc is not None and seen < 5:
        state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if state in RETRYABLE_SQLSTATES:
            return True
        if type(exc).__module__.startswith("sqlite3") and "locked" in str(exc).lower():
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__
        seen += 1
    return False


class Retry:
    """``for attempt in retry.attempts(): try: ...; break; except Exception as exc: if not
    retry.retryable(exc, attempt): raise``."""

    def __init__(self, attempts: int = 10, first_delay: float = 0.005, max_delay: float = 0.5):
        self.max_attempts = attempts
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.retried = 0  # attempts run again so far (a figure for tests and metrics)

    def attempts(self) -> Iterator[int]:
        return iter(range(self.max_attempts))

    def retryable(self, exc: BaseException, attempt: int) -> bool:
        """Whether to run again after ``exc`` failed attempt number ``attempt`` (sleeps first)."""
        if attempt + 1 >= self.max_attempts or not is_retryable(exc):
            return False
        delay = min(self.max_delay, self.first_delay * 2 ** attempt)
        time.sleep(delay * (0.5 + random.random()))
        self.retried += 1
        return True
