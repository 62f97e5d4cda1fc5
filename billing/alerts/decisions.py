"""Webhooks from quota decisions, once per crossing, never once per call:

- ``quota.exhausted``: a decision denied for ``quota_exhausted`` (a blocking allowance used
  up) or ``spend_cap_reached``; key ``<period start us>:<reason>:<charges>``, so a customer
  denied 10,000 times in a period is one webhook (a new period is a new crossing);
- ``alert.triggered`` rule ``task_guard``: a decision of an agent task's call passed the
  plan's ``task_cost`` guard (whatever its policy); key ``<task>``: once per task.

Every other decision returns at the first comparison (the hot path pays nothing). A crossing
this process queued is remembered, so later calls past it do not write; another process
writes at most once more, and the outbox's unique message id keeps that one webhook. A
failed write is logged, never raised: the decision stands, the next call past the limit
tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from billing.alerts.events import enqueue_alert, enqueue_event
from billing.quota.decide import Decision, Outcome, Reason
from billing.store.types import to_us

log = logging.getLogger("billing.alerts")

EXHAUSTED = (Reason.QUOTA_EXHAUSTED, Reason.SPEND_CAP_REACHED)


class DecisionNotices:
    def __init__(self, engine: Engine, clock: Callable[[], datetime], *, enabled: bool = True):
        self.engine = engine
        self.clock = clock
        self.enabled = enabled
        self._seen: set[tuple[str, str, str]] = set()

    def after(self, ctx: Any, request: Any, decision: Any) -> None:
        """Queue what ``decision`` (for ``request`` in ``ctx``) crosses, if anything new."""
        if not self.enabled or ctx is None or not isinstance(decision, Decision):
            return
        if decision.outcome == Outcome.DENY and decision.reason in EXHAUSTED:
            self._once("quota.exhausted", ctx, f"{to_us(ctx.period.start)}:{decision.reason}:"
                       f"{','.join(decision.charges)}", decision, request)
        if decision.guard == "task_cost" and getattr(request, "task", None):
            self._once("task_guard", ctx, str(request.task), decision, request)

    def _once(self, what: str, ctx: Any, key: str, decision: Decision, request: Any) -> None:
        seen = (what, ctx.customer, key)
        if seen in self._seen:
            return
        now = self.clock()
        data = {"meter": decision.meter, "charges": list(decision.charges), "reason": str(decision.reason),
                "outcome": str(decision.outcome), "message": decision.message, "guard": decision.guard,
                "retry_after": decision.retry_after,
                "period": {"start": ctx.period.start.isoformat(), "end": ctx.period.end.isoformat()},
                "plan": {"id": ctx.plan.plan, "version": ctx.plan.version}}
        try:
            with self.engine.begin() as conn:
                if what == "quota.exhausted":
                    enqueue_event(conn, "quota.exhausted", f"{ctx.customer}:{key}", ctx.customer, data, now)
                else:
                    enqueue_alert(conn, customer=ctx.customer, rule="task_guard", key=key,
                                  data={**data, "task": str(request.task), "task_remaining": _task(decision)},
                                  at=now)
        except Exception:  # noqa: BLE001 - the decision stands; the next call past the limit retries
            log.exception("could not queue the %s webhook of %s", what, ctx.customer)
            return
        if len(self._seen) > 100_000:
            self._seen.clear()
        self._seen.add(seen)


def _task(decision: Decision) -> dict[str, Any] | None:
    if decision.task is None:
        return None
    return {k: v if v is None or isinstance(v, int) else str(v) for k, v in decision.task.items()}
