"""A caller's promise to make its writes durable before it answers (``flushed_later``).

On PostgreSQL every reservation and commit is answered only after its transaction is
durable. A request with an ``Idempotency-Key`` writes twice: the quota writer's batch
transaction, then its key's record (the stored answer, ``billing.store.idempotency``). Both
waiting for the WAL flush costs two fsyncs where one is enough: a durable commit flushes
the WAL up to its own commit record, so every transaction committed before it (on any
connection) is durable too. Inside ``flushed_later()`` the writer may commit a batch made
only of such callers' operations with ``synchronous_commit = off``
(``billing.reservations.writer``) and marks their promise ``owed``; the caller then must
commit a durable write (the record of its answer, the record's deletion when the answer is
not kept, else ``IdempotencyStore.flush``) before it answers. Until then the batch's rows are visible but not yet durable, as any
asynchronously committed transaction's: a later durable write that depends on them
(another commit, a close) flushes them first; a crash in between loses them, and with them
the request, which was never answered and runs again when retried.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


class Promise:
    """``owed``: a batch of this caller's operations committed without waiting for the flush."""

    __slots__ = ("owed",)

    def __init__(self) -> None:
        self.owed = False


@contextmanager
def flushed_later() -> Iterator[Promise]:
    """This thread's quota writes may be committed without waiting for the WAL flush; the
    caller commits a durable write before answering when the promise it yields is ``owed``."""
    promise, before = Promise(), getattr(_local, "promise", None)
    _local.promise = promise
    try:
        yield promise
    finally:
        _local.promise = before


def current() -> Promise | None:
    """This thread's promise (``flushed_later``), or None: its writes are durable when answered."""
    return getattr(_local, "promise", None)
