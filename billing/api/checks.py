"""Quota checks batched on the event loop (PostgreSQL): ``AsyncChecks``.

A check over the network is one round trip; served one thread-pool hop per request, 16
concurrent checks cost 16 hops and 16 round trips and fight over the GIL. Here a request
validates its question, queues it and awaits a future; whenever fewer than ``max_batches``
batches are running, what is queued (up to ``max_batch`` questions) goes to a worker thread
as ONE batch (``Quota.check_batch``: one read for all its customers), and each future gets
its own decision or error. A lone request still goes at once: nothing waits to fill a batch.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from functools import partial
from typing import Any

from billing.reservations.types import Op, parse_request
from billing.quota.decide import Decision


class AsyncChecks:
    def __init__(self, quota: Any, max_batches: int = 4, max_batch: int = 32):
        self.quota = quota
        self.max_batches = max_batches
        self.max_batch = max_batch  # a batch loads the contexts it misses one after another
        self._pending: list[tuple[Op, asyncio.Future]] = []
        self._running = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def check(self, customer: str, key: str, quantity: Decimal | int | str = 1, *, model: str | None = None,
                    task: str | None = None, tokens: int | None = None, cost: Decimal | int | str = 0,
                    steps: int | None = None, retry: int | None = None, depth: int | None = None,
                    properties: dict | None = None) -> Decision:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:  # batches belong to one loop (a server has one): ask alone
            return await loop.run_in_executor(None, partial(
                self.quota.check, customer, key, quantity, model=model, task=task, tokens=tokens, cost=cost,
                steps=steps, retry=retry, depth=depth, properties=properties))
        request = parse_request(customer, key, quantity, model, task, tokens, cost, steps, retry, depth,
                                properties)  # errors: at once
        future = loop.create_future()
        self._pending.append((Op("check", customer=customer, request=request), future))
        if self._running < self.max_batches:
            self._launch()
        return await future

    def _launch(self) -> None:
        batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        if not batch:
            return
        self._running += 1
        try:
            work = self._loop.run_in_executor(None, self.quota.check_batch, [op for op, _ in batch])
        except BaseException as exc:  # noqa: BLE001 - the executor is gone (shutting down)
            self._running -= 1
            for _op, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        work.add_done_callback(lambda done: self._finish(batch, done))

    def _finish(self, batch: list[tuple[Op, asyncio.Future]], done: asyncio.Future) -> None:
        self._running -= 1
        failure = done.exception()
        for op, future in batch:
            if future.done():  # the client went away
                continue
            if op.result is not None and op.error is None:  # decided before anything failed
                future.set_result(op.result)
            else:
                future.set_exception(op.error or failure or RuntimeError("check not answered"))
        while self._pending and self._running < self.max_batches:
            self._launch()
