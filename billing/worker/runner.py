"""Run jobs under their locks: one record per run, handed to ``emit`` (the CLI prints it as
one JSON line). A record is ``{"job", "status", "took_ms", "at", ...}`` where status is
``ok`` (with the job's counts under ``result``), ``skipped`` (another worker holds the
job's lock) or ``error`` (with ``error``: the job raised, or its result says ``"ok": false``;
the worker goes on with the next run)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from billing.worker.jobs import JOBS, JobContext
from billing.worker.locks import job_lock
from billing.worker.schedule import Schedule

log = logging.getLogger("billing.worker")


class Worker:
    def __init__(self, ctx: JobContext, names: Sequence[str], intervals: dict[str, float], *,
                 emit: Callable[[dict], None], monotonic: Callable[[], float] = time.monotonic):
        self.ctx = ctx
        self.names = list(names)
        self.intervals = intervals
        self.emit = emit
        self.monotonic = monotonic

    def run_job(self, name: str) -> dict:
        started = self.monotonic()
        record: dict = {"job": name, "at": self.ctx.clock().isoformat()}
        try:
            with job_lock(self.ctx.engine, name) as held:
                if held:
                    result = JOBS[name](self.ctx)
                    record.update(status="ok", result=result)
                    if result.get("ok") is False:  # a job that went on past failed items (stripe_sync)
                        record.update(status="error", error="some items failed (see result); the next run retries")
                else:
                    record.update(status="skipped", reason="another worker holds the job's lock")
        except Exception as exc:  # noqa: BLE001 - one failed run never stops the worker
            log.debug("job %s failed", name, exc_info=True)
            first_line = (str(exc).splitlines() or [""])[0]
            record.update(status="error", error=f"{type(exc).__name__}: {first_line}"[:500])
        record["took_ms"] = round((self.monotonic() - started) * 1000)
        self.emit(record)
        return record

    def run_once(self, stop: threading.Event | None = None) -> list[dict]:
        """Each job once, in order (stops early when ``stop`` is set between jobs)."""
        records = []
        for name in self.names:
            if stop is not None and stop.is_set():
                break
            records.append(self.run_job(name))
        return records

    def run_forever(self, stop: threading.Event) -> None:
        """Run each job every interval until ``stop`` is set; a job that is running when it
        is set finishes first."""
        schedule = Schedule(self.names, self.intervals, self.monotonic())
        while not stop.is_set():
            for name in schedule.due(self.monotonic()):
                if stop.is_set():
                    return
                self.run_job(name)
                schedule.ran(name, self.monotonic())
            stop.wait(min(schedule.wait(self.monotonic()), 60.0))
