"""Quota checks batched on the event loop (PostgreSQL): ``AsyncChecks``.

A check over the network is one round trip; served one thread-pool hop per request, 16
concurrent checks cost 16 hops and 16 round trips and fight over the GIL. Here a request
validates its question, queues it and awaits a future; whenever fewer than ``max_batches``
batches are running, everything queued goes to a worker thread as ONE batch
(``Quota.check_batch``: one read for all its customers), and each future gets its own
decision or error. A lone request still goes at once: nothing waits to fill a batch.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from billing.ledger.quota_types import Op, parse_request
from billing.quota.decide import Decision


class AsyncChecks:
    def __init__(self, quota: Any, max_batches: int = 4):
        self.quota = quota
        self.max_batches = max_batches
        self._pending: list[tuple[Op, asyncio.Future]] = []
        self._running = 0

    async def check(self, customer: str, key: str, quantity: Decimal | int | str = 1, *, model: str | None = None,
                    task: str | None = None, tokens: int | None = None, cost: Decimal | int | str = 0,
                    steps: int | None = None) -> Decision:
        request = parse_request(customer, key, quantity, model, task, tokens, cost, steps)  # errors: at once
        future = asyncio.get_running_loop().create_future()
        self._pending.append((Op("check", customer=customer, request=request), future))
        if self._running < self.max_batches:
            self._launch()
        return await future

    def _launch(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        self._running += 1
        work = asyncio.get_running_loop().run_in_executor(None, self.quota.check_batch, [op for op, _ in batch])
        work.add_done_callback(lambda done: self._finish(batch, done))

    def _finish(self, batch: list[tuple[Op, asyncio.Future]], done: asyncio.Future) -> None:
        self._running -= 1
        failure = done.exception() if not done.cancelled() else asyncio.CancelledError()
        for op, future in batch:
            if future.done():  # the client went away
                continue
            error = failure or op.error
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(op.result)
        if self._pending:
            self._launch()
