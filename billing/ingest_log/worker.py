"""The ingest worker: a durable pull consumer on the log feeding the ledger.

Any number of workers (processes, machines) share the durable consumer ``billing-ingest``
on ``<stream>.events``; JetStream hands each message to one of them at a time. A worker's
step (``IngestWorker.step``):

1. fetch up to ``batch`` messages;
2. a message that is not a batch of events (``messages.decode``) is published to
   ``<stream>.dead`` with the reason (headers ``Billing-Dead-*``), then acknowledged: it
   never blocks the stream;
3. the events of all the other messages go to ``Ledger.record`` in ONE call (the one
   ingestion service: validation, costing, counters, budget alerts; per-event rejections
   are ledger results, logged, not dead letters); while it runs the messages are kept
   ``in progress`` so the server does not hand them to another worker;
4. only after ``record`` returned (its transactions committed) are the messages
   acknowledged. If it raised (the database is down, ...), they are negatively
   acknowledged with a delay and come back.

A worker that dies between 3 and 4 (SIGKILL, a lost machine) leaves its messages
unacknowledged: after ``ack_wait`` the server delivers them again, to any worker, and the
ledger answers ``duplicate`` for the events it already holds. At least once delivery, each
event counted once. SIGTERM / SIGINT: finish the current step, then stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import asdict, dataclass
from typing import Any

from billing.errors import BillingError
from billing.ingest_log.log import (CONSUMER, DEAD_REASON, DEAD_SEQUENCE, DEAD_SUBJECT, DEAD_TRUNCATED, body_limit,
                                    check_stream_name, dead_subject, ensure_stream, events_subject)
from billing.ingest_log.messages import decode
from billing.ingest_log.publisher import connect
from billing.ledger.ingest import BatchResult, Ledger

log = logging.getLogger("billing.ingest_log")

RETRY_DELAY_S = 2.0  # a batch the ledger failed on comes back after this long
RECONNECT_ATTEMPTS = 60  # a second apart: a worker rides out a NATS restart of about a minute


@dataclass
class Totals:
    """What a worker did since it started."""

    steps: int = 0
    messages: int = 0
    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    dead_letters: int = 0
    redelivered: int = 0  # messages delivered before (to a worker that died, or whose ledger call failed)
    failed_steps: int = 0  # steps whose record() raised (their messages came back)

    def add(self, result: BatchResult) -> None:
        self.events += result.size
        self.accepted += result.accepted
        self.duplicates += result.count("duplicate")
        self.conflicts += result.count("conflict")
        self.rejected += result.count("rejected")

    def to_json(self) -> dict[str, int]:
        return asdict(self)


class IngestWorker:
    """One worker over ``ledger`` and the stream ``stream`` of the NATS server at ``url``.

    ``batch``: messages per fetch (each holds up to 1,000 events); ``ack_wait``: seconds
    the server waits for an acknowledgement before delivering a message again (used when
    this worker creates the consumer; an existing consumer keeps its own)."""

    def __init__(self, ledger: Ledger, url: str, stream: str, *, batch: int = 20, ack_wait: float = 60.0,
                 fetch_timeout: float = 1.0) -> None:
        if batch < 1:
            raise BillingError("batch must be at least 1 message")
        if ack_wait < 1:
            raise BillingError("ack_wait must be at least 1 second")
        self.ledger, self.url, self.stream = ledger, url, check_stream_name(stream)
        self.batch, self.ack_wait, self.fetch_timeout = batch, ack_wait, fetch_timeout
        self.totals = Totals()
        self._nc = self._js = self._sub = None

    async def start(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        self._nc, self._js = await connect(self.url, name="billing-ingest-worker", attempts=RECONNECT_ATTEMPTS)
        await ensure_stream(self._js, self.stream)
        config = ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                                filter_subject=events_subject(self.stream), ack_wait=self.ack_wait,
                                max_deliver=-1, max_ack_pending=10_000)
        self._sub = await self._js.pull_subscribe(events_subject(self.stream), durable=CONSUMER,
                                                  stream=self.stream, config=config)
        info = await self._sub.consumer_info()  # an existing consumer keeps its own ack_wait:
        self.ack_wait = info.config.ack_wait or self.ack_wait  # keep-alives follow it

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.flush()  # the last acknowledgements are on the wire
            await self._nc.close()
        self._nc = self._js = self._sub = None

    async def fetch(self) -> list[Any]:
        """Up to ``batch`` messages ([] when none came within ``fetch_timeout``)."""
        import nats.errors

        try:
            return await self._sub.fetch(self.batch, timeout=self.fetch_timeout)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return []

    async def record(self, messages: list[Any]) -> tuple[list[Any], BatchResult | None]:
        """Steps 2 and 3: dead-letter what is not a batch of events, record the rest in one
        ``Ledger.record`` call. Returns the messages recorded (committed, not yet
        acknowledged) and the ledger's result; ([], None) and the messages negatively
        acknowledged when the ledger raised."""
        good, events = [], []
        for msg in messages:
            if msg.metadata.num_delivered > 1:
                self.totals.redelivered += 1
            decoded = decode(msg.data)
            if decoded.events is None:
                await self._dead_letter(msg, decoded.reason)
            else:
                good.append(msg)
                events.extend(decoded.events)
        if not good:
            return [], None
        keep_alive = asyncio.create_task(self._in_progress(good))
        try:
            result = await asyncio.to_thread(self.ledger.record, events, result=BatchResult(keep_events=False))
        except Exception as exc:
            self.totals.failed_steps += 1
            log.error("ledger failed on %d events of %d messages (they will be delivered again in %.0f s): %s: %s",
                      len(events), len(good), RETRY_DELAY_S, type(exc).__name__, exc)
            for msg in good:
                await msg.nak(delay=RETRY_DELAY_S)
            return [], None
        finally:
            keep_alive.cancel()
        self.totals.add(result)
        for problem in result.errors()[:20]:
            log.warning("event %s of customer %s %s: %s: %s", problem.id, problem.customer, problem.status,
                        problem.code, problem.message)
        return good, result

    async def acknowledge(self, messages: list[Any]) -> None:
        """Step 4 (after ``record`` committed)."""
        for msg in messages:
            await msg.ack()
        await self._nc.flush()
        self.totals.messages += len(messages)

    async def step(self) -> int:
        """One fetch, recorded and acknowledged; the number of messages fetched."""
        messages = await self.fetch()
        if messages:
            log.info("fetched %d messages (stream sequences %d-%d)", len(messages),
                     messages[0].metadata.sequence.stream, messages[-1].metadata.sequence.stream)
            recorded, result = await self.record(messages)
            if recorded:
                await self.acknowledge(recorded)
                self.totals.steps += 1
                log.info("recorded %d messages: %s", len(recorded), _summary(result))
        return len(messages)

    async def drained(self) -> bool:
        """Nothing left to deliver and nothing awaiting an acknowledgement (of any worker)."""
        info = await self._sub.consumer_info()
        return info.num_pending == 0 and info.num_ack_pending == 0

    async def run(self, stop: asyncio.Event, *, until_drained: bool = False) -> Totals:
        """Steps until ``stop`` is set (or, ``until_drained``, the stream is drained)."""
        import nats.errors

        await self.start()
        try:
            while not stop.is_set():
                try:
                    if await self.step() == 0 and until_drained and await self.drained():
                        break
                except nats.errors.Error as exc:  # the connection was lost, the server is busy...:
                    # what this step fetched and did not acknowledge is delivered again
                    log.warning("NATS: %s: %s; trying again in 1 s", type(exc).__name__, exc)
                    await asyncio.sleep(1)
                    if self._nc.is_closed:  # out of reconnection attempts: start again
                        await self.start()
        finally:
            await self.close()
        return self.totals

    async def _dead_letter(self, msg: Any, reason: str) -> None:
        meta = msg.metadata
        headers = {DEAD_REASON: reason[:1000], DEAD_SUBJECT: msg.subject, DEAD_SEQUENCE: str(meta.sequence.stream)}
        data, limit = msg.data, body_limit(self._nc.max_payload)
        if len(data) > limit:  # the original with the headers would pass max_payload (the server
            # would reset the connection, forever): keep its start; the whole stays at its sequence
            data, headers[DEAD_TRUNCATED] = data[:limit], str(len(data))
        await self._js.publish(dead_subject(self.stream), data, headers=headers, stream=self.stream)
        await msg.ack()  # only once the dead letter is persisted
        self.totals.dead_letters += 1
        log.warning("message %d is not a batch of events (%s): moved to %s", meta.sequence.stream, reason,
                    dead_subject(self.stream))

    async def _in_progress(self, messages: list[Any]) -> None:
        """Tell the server, every third of ``ack_wait``, that the messages are being worked on."""
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            for msg in messages:
                await msg.in_progress()


def _summary(result: BatchResult | None) -> str:
    if result is None:
        return "nothing"
    return (f"{result.size} events, {result.accepted} accepted, {result.count('duplicate')} duplicates, "
            f"{result.count('conflict')} conflicts, {result.count('rejected')} rejected")


def run_worker(worker: IngestWorker, *, until_drained: bool = False) -> Totals:
    """Run ``worker`` in this thread until SIGTERM / SIGINT (the step under way finishes
    and is acknowledged first), or until the stream is drained."""

    async def main() -> Totals:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await worker.run(stop, until_drained=until_drained)

    return asyncio.run(main())
