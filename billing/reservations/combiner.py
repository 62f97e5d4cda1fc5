"""Combining concurrent operations into batches: ``Combiner``, the leader/follower scheme
behind ``billing.reservations.writer``'s group transactions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from billing.reservations.types import Op

_MAX_BATCH = 200


class Combiner:
    """Runs submitted operations in batches, at most ``leaders`` batches at a time (see
    ``billing.reservations.writer``). ``run(batch)`` must set each op's ``result`` or ``error``.

    A caller that finds a free slot leads at once. Otherwise it queues its op and sleeps on
    the op's own lock until a leader has run it, or until a finishing leader hands it the
    slot (then it leads a batch of everything queued). Each op is woken exactly once.

    ``gather`` (seconds, with one leader only): under load (the last batch had several
    operations and began within the last ``10 * gather``), a leader waits up to this long
    for as many operations as the last batch had before it starts, as a database's group
    commit delay does: a batch's round trips and its commit cost the same for one operation
    as for twenty. A caller arriving after a quiet spell does not wait. (With several
    leaders a new caller takes a free slot instead of queueing, so a waiting leader would
    wait for nothing.)"""

    def __init__(self, run: Callable[[list[Op]], None], *, leaders: int = 1, max_batch: int = _MAX_BATCH,
                 gather: float = 0.0):
        self._run = run
        self._leaders = leaders
        self._max = max_batch
        self._gather = gather if leaders == 1 else 0.0
        self._mutex = threading.Lock()
        self._arrived = threading.Condition(self._mutex)
        self._queue: list[Op] = []
        self._active = 0
        self._last = 1  # operations in the last batch
        self._last_at = 0.0  # when it began (time.monotonic())

    def submit(self, op: Op) -> Any:
        with self._mutex:
            if self._active < self._leaders:
                self._active += 1
                lead = True
            else:
                op.wake = threading.Lock()
                op.wake.acquire()
                self._queue.append(op)
                if self._gather:
                    self._arrived.notify()
                lead = False
        if not lead:
            op.wake.acquire()  # released by our batch's leader, or by a leader handing over its slot
            if op.done:
                return self._outcome(op)
        with self._mutex:  # we lead: our op and everything queued
            if self._gather:
                now = time.monotonic()
                want = min(self._last, self._max) - 1 if now - self._last_at < 10 * self._gather else 0
                if len(self._queue) < want:
                    self._arrived.wait_for(lambda: len(self._queue) >= want, timeout=self._gather)
                    now = time.monotonic()
                self._last_at = now
            batch = [op, *self._queue[:self._max - 1]]
            del self._queue[:len(batch) - 1]
            self._last = len(batch)
        for o in batch:
            o.queued = False
        try:
            self._run(batch)
        except BaseException as exc:  # noqa: BLE001 - handed to every caller
            for o in batch:
                if o.result is None and o.error is None:
                    o.error = exc
        with self._mutex:
            for o in batch:
                o.done = True
            nxt = self._queue.pop(0) if self._queue else None  # hand our slot over
            if nxt is None:
                self._active -= 1
        for o in batch[1:]:
            o.wake.release()
        if nxt is not None:
            nxt.wake.release()
        return self._outcome(op)

    @staticmethod
    def _outcome(op: Op) -> Any:
        if op.error is not None:
            raise op.error
        return op.result
