"""When and how the HTTP clients send a request again.

A write carries an ``Idempotency-Key`` (one per logical write, the same on every attempt),
so sending it again after a lost answer is safe: the server replays the first answer.
Transient failures are retried: connection errors, timeouts, 5xx answers and
``409 idempotency_key_in_use`` (the first attempt is still being processed). Any other 4xx
is an answer, never retried. Attempts and total time are bounded; the delay grows
exponentially with jitter (half fixed, half random, so retries of many clients spread out
yet still back off), and a ``Retry-After`` header is honoured within the bounds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import httpx

from billing.client.errors import ApiError

IN_USE = "idempotency_key_in_use"


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts``: tries in all (1 = never retry); ``total_seconds``: no new attempt starts
    after this long since the first; delays ``base_delay * 2**n`` capped at ``max_delay``."""

    attempts: int = 5
    total_seconds: float = 30.0
    base_delay: float = 0.2
    max_delay: float = 5.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.total_seconds < 0 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("attempts must be >= 1 and times >= 0")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before try number ``attempt + 1`` (``attempt`` counts from 0)."""
        cap = min(self.max_delay, self.base_delay * 2 ** attempt)
        wait = cap / 2 + self.rng.uniform(0, cap / 2)
        if retry_after is not None and retry_after > wait:
            wait = min(retry_after, self.max_delay)
        return wait

    def next_delay(self, attempt: int, elapsed: float, exc: BaseException) -> float | None:
        """The wait before retrying after ``exc`` failed try ``attempt``, or None: give up."""
        if attempt + 1 >= self.attempts or not transient(exc):
            return None
        wait = self.delay(attempt, getattr(exc, "retry_after", None))
        if elapsed + wait > self.total_seconds:
            return None
        return wait



def transient(exc: BaseException) -> bool:
    """A failure that may pass if the same request is sent again."""
    if isinstance(exc, ApiError):
        return exc.status >= 500 or (exc.status == 409 and exc.raw_code == IN_USE)
    if isinstance(exc, httpx.UnsupportedProtocol):  # a bad URL stays bad
        return False
    return isinstance(exc, httpx.TransportError)
