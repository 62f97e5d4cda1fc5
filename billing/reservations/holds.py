"""Two-phase quota use over the database: ``check``, ``reserve``, ``commit``, ``release``.

``Quota(engine, catalog, ledger)`` reads the customer's usage state (usage counters, live
holds, rate windows, task usage, credits, dunning), asks the pure decision function
(``billing.quota.decide``) and, for ``reserve``, writes a hold.

The concurrency promise (N concurrent reservations against a remaining budget B never
grant more than B, across threads, processes and API servers sharing one database) comes
from serialising every reservation of one customer: the decision is taken and the hold is
written inside one transaction that holds the customer's lock —
``pg_advisory_xact_lock`` on PostgreSQL, the database write lock (``BEGIN IMMEDIATE``) on
SQLite. The state is read after the lock is taken, so each reservation sees every hold
granted before it. Concurrent calls of one process share transactions
(``billing.reservations.writer``): a batch decides its reservations one after the other,
each seeing the grants before it.

Holds count while ``status = 'held' and expires_at > now``: an expired hold frees itself
without a sweeper. ``commit`` records the event, bumps the usage counters and settles the
hold in ONE transaction, so usage is never under- or double-counted in between. A commit
of an expired hold is still recorded (the usage happened), answered ``late_commit: true``
and logged in ``quota_late_commit`` (``usage()["late_commits"]``, ``late_commits()``).
``commit`` is idempotent per reservation: a commit of a committed hold answers the stored
result when the fields it gives match the event stored then (what it leaves out is not
compared), else ``event_conflict``. ``reserve`` is idempotent per ``(customer, request_id)``.

Reads (``check``, ``usage``) use driver connections without a transaction of their own
(``billing.reservations.sql``): one statement is one consistent snapshot.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select, update

from billing.catalog import Catalog
from billing.errors import BillingError, ErrorCode
from billing.ledger.ingest import Ledger
from billing.store.models import UsageEventRow
from billing.alerts.decisions import DecisionNotices
from billing.alerts.outbox import Outbox
from billing.ledger.prepare import UNPRICED_MODEL
from billing.store.operational_models import BudgetAlertRow, QuotaHold
from billing.reservations.combiner import Combiner
from billing.reservations.metrics import late_commit_count, late_commits_by_meter
from billing.reservations.sql import (
    MICRO, Connections, Context, batch_state_query, batch_task_query, load_context, load_contexts, make_state,
    parse_batch_state, parse_batch_tasks, parse_state, parse_task, run_all, state_query, task_query, usage_state,
    budget_rows_of, StaleContext, check_version, stale_of, state_version)
from billing.reservations.budget_sql import BudgetReader
from billing.reservations.types import (
    MAX_COST, MAX_QUANTITY, READ_AGAIN, HoldStatus, Op, Reservation, WarnedDecision, parse_request, storable_text)
from billing.reservations.writer import QuotaWriter
from billing.store.types import from_us, to_us
from billing.money import dec_str
from billing.quota.alerts import Alert
from billing.costs.estimate import estimate_cost
from billing.quota.decide import Decision, MeterUsage, QuotaRequest, UsageState, decide, plan_credit_amount
from billing.quota.usage import charge_spends

__all__ = ["Quota", "Reservation", "Context", "Outbox", "MAX_QUANTITY", "MAX_COST"]

ZERO = Decimal(0)
# contexts a ``Quota`` keeps at most: ~0.5 KB each (the plan is shared), so 20,000 are ~10 MB;
# with the API's one-second ``context_ttl`` that is the contexts of 20,000 checks a second
CONTEXT_CACHE_MAX = 20_000
MAX_COST_DECIMAL = Decimal(MAX_COST)  # an estimate is held at most at the largest cost a request may give

_hold = QuotaHold.__table__
_event = UsageEventRow.__table__
_alert = BudgetAlertRow.__table__


def _lock_key(customer: str) -> int:
    return int.from_bytes(hashlib.blake2b(customer.encode(), digest_size=8).digest(), "big", signed=True)


class Quota:
    """Quota decisions and holds over one database.

    ``context_ttl``: seconds a customer's plan / period / seats / credits / dunning state
    stays cached (usage, holds and rate windows are always read fresh); 0 reads it every
    time; at most ``context_cache_max`` contexts are kept (the oldest loaded leaves first, and
    an expired one as soon as a newer one is loaded). ``writers``: batch transactions this
    object runs at once (default 1: under load one batch at a time makes the biggest batches
    and the least work per operation).
    """

    def __init__(self, engine: Engine, catalog: Catalog, ledger: Ledger | None = None, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), default_ttl: float = 60.0,
                 max_ttl: float = 86_400.0, context_ttl: float = 0.0, alerts: bool = True,
                 writers: int | None = None, context_cache_max: int = CONTEXT_CACHE_MAX):
        self.engine = engine
        self.catalog = catalog
        self.clock = clock
        self.ledger = ledger or Ledger(engine, catalog, clock=clock, alerts=alerts)
        if self.ledger.alerts is not None and self.ledger.alerts.contexts is None:
            self.ledger.alerts.contexts = self.contexts  # its alerts read contexts through this cache
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.alerts = alerts  # evaluate budget alerts after commits and ingested events
        # quota.exhausted and task-guard alerts from decisions, once per crossing
        self.notices = DecisionNotices(engine, clock, enabled=alerts)
        self._fired: set[tuple[str, int, str, Decimal]] = set()
        self.conns = Connections(engine)
        self.inline_reads = not self.conns.pg  # SQLite reads are local: cheaper than a thread hop
        self.context_ttl = context_ttl
        # customer -> (expires at, context), in the order loaded (so in expiry order): at most
        # ``context_cache_max`` of them; an expired one leaves when a newer one is loaded
        self._ctx_cache: dict[str, tuple[float, Context]] = {}
        self.context_cache_max = context_cache_max
        self._ctx_lock = threading.Lock()
        self.context_hits = self.context_misses = 0  # (``GET /metrics``: the cache's hit rate)
        self._model_warnings: dict[tuple[str, Any], tuple] = {}  # (model, day) -> warnings of _warnings_book
        self._warnings_book = None
        self.budget_reader = BudgetReader()  # budgets' committed events, read incrementally
        self.writer = QuotaWriter(self, self.conns, leaders=writers)
        # PostgreSQL checks of concurrent callers are batched (a few batches at once); SQLite
        # reads are local and cheaper alone
        self.reads = Combiner(self.check_batch, leaders=4) if self.conns.pg else None

    def close(self) -> None:
        """Close the driver connections this object (and its ledger's alerts) keep."""
        self.conns.close()
        self.ledger.close()

    # ----------------------------------------------------------------- state
    @staticmethod
    def lock_key(customer: str) -> int:
        return _lock_key(customer)

    def _cached(self, customer: str, now: datetime) -> Context | None:
        hit = self._ctx_cache.get(customer)
        if hit is not None and hit[0] > now.timestamp() and hit[1].period.start <= now < hit[1].period.end \
                and (hit[1].valid_until is None or now < hit[1].valid_until):
            self.context_hits += 1
            return hit[1]
        self.context_misses += 1
        return None

    def _remember(self, customer: str, now: datetime, ctx: Context) -> None:
        if self.context_ttl <= 0:
            return
        cache = self._ctx_cache
        at = now.timestamp()
        with self._ctx_lock:  # (checks of several threads load contexts at once)
            cache.pop(customer, None)  # (to the end: the order stays the order loaded)
            cache[customer] = (at + self.context_ttl, ctx)
            # the oldest leave: past the bound, or expired (a few per load: the cache holds the
            # contexts of the last ``context_ttl`` seconds, not every customer ever checked)
            for _ in range(4):
                oldest = next(iter(cache))
                if len(cache) <= self.context_cache_max and cache[oldest][0] > at:
                    break
                del cache[oldest]

    def context(self, conn: Any, customer: str, now: datetime) -> Context:
        """The customer's context at ``now`` (cached for ``context_ttl`` seconds)."""
        hit = self._cached(customer, now) if self.context_ttl > 0 else None
        if hit is not None:
            return hit
        ctx = load_context(self.conns, conn, self.catalog, customer, now)
        self._remember(customer, now, ctx)
        return ctx

    def contexts(self, conn: Any, customers: list[str], now: datetime) -> dict[str, Context | BillingError]:
        """``context`` of several customers; those not cached are loaded in one round trip
        (a ``BillingError`` for a customer ``context`` would raise it for)."""
        out: dict[str, Context | BillingError] = {}
        missing = []
        for customer in customers:
            hit = self._cached(customer, now) if self.context_ttl > 0 else None
            if hit is not None:
                out[customer] = hit
            else:
                missing.append(customer)
        if missing:
            loaded = load_contexts(self.conns, conn, self.catalog, missing, now)
            for customer, found in loaded.items():
                if not isinstance(found, BillingError):
                    self._remember(customer, now, found)
            out.update(loaded)
        return out

    def forget(self, customer: str | None = None) -> None:
        """Drop cached contexts (after a subscription, seat or credit change)."""
        with self._ctx_lock:
            if customer is None:
                self._ctx_cache.clear()
            else:
                self._ctx_cache.pop(customer, None)
        self.budget_reader.forget(customer)

    # ---------------------------------------------------------------- public
    def check(self, customer: str, key: str, quantity: Decimal | int | str = 1, *, model: str | None = None,
              task: str | None = None, tokens: int | None = None, cost: Decimal | int | str = 0,
              steps: int | None = None, retry: int | None = None, depth: int | None = None,
              properties: dict | None = None) -> Decision:
        """What would happen to this request now (read-only: holds nothing). ``properties``:
        the properties the call's event will carry (its budget scopes: team, user, ...)."""
        request = parse_request(customer, key, quantity, model, task, tokens, cost, steps, retry, depth, properties)
        if self.reads is not None:  # over the network: concurrent checks share a round trip
            return self.reads.submit(Op("check", customer=customer, request=request))
        request = self.estimated(request)
        now = self.clock()
        conn = self.conns.local_reader()
        if conn is not None:  # a SQLite file: this thread's connection, one statement in C
            now_us = to_us(now)
            for attempt in range(_STALE_TRIES):
                ctx = self.context(conn, customer, now)
                state_rows = conn.execute(*state_query(ctx, now_us)).fetchall()
                try:
                    check_version(ctx, state_version(state_rows))
                    break
                except StaleContext:  # changed since it was cached: load it again
                    self.forget(customer)
            else:
                raise _still_changing()
            usage, held, rates = parse_state(state_rows)
            task_usage = parse_task(conn.execute(*task_query(customer, task, now_us)).fetchall()) \
                if task is not None else None
            rows = self._budget_rows(conn, ctx, now) if ctx.budgets else None
            decision = decide(ctx.plan, make_state(ctx, now, usage, held, rates, task_usage, rows), request)
            self.notices.after(ctx, request, decision)
            return self._warned(decision, request, now)
        with self.conns.read() as conn:  # in-memory SQLite
            for attempt in range(_STALE_TRIES):
                ctx = self.context(conn, customer, now)
                try:
                    state = usage_state(self.conns, conn, ctx, now, task, self.budget_reader, self.context_ttl)
                    break
                except StaleContext:
                    self.forget(customer)
            else:
                raise _still_changing()
        decision = decide(ctx.plan, state, request)
        self.notices.after(ctx, request, decision)
        return self._warned(decision, request, now)

    def _budget_rows(self, conn: Any, ctx: Context, now: datetime) -> list | None:
        """A check's budget rows: as read less than ``context_ttl`` ago (a check is read-only
        and its context as old), else read now. Reservations read them under the lock."""
        rows = self.budget_reader.recent(ctx, now, self.context_ttl) if self.context_ttl > 0 else None
        return rows if rows is not None else budget_rows_of(self.conns, conn, ctx, now, self.budget_reader)

    def estimated(self, request: QuotaRequest) -> QuotaRequest:
        """``request`` with its provider cost estimated when the caller gave none but named a
        model and its tokens (``billing.costs.estimate``): a hold keeps the estimate, so
        cost guards and task cost limits count calls in flight."""
        if request.cost or request.model is None or not request.tokens:
            return request
        costs = self.ledger.costs
        costs.refresh()
        found = estimate_cost(costs.book, request.model, request.tokens, self.clock())
        return replace(request, cost=min(found, MAX_COST_DECIMAL)) if found else request

    def model_warnings(self, model: str | None, now: datetime) -> tuple[dict[str, str], ...]:
        """``unpriced_model`` when the cost book (the ledger's, kept up to date) cannot price
        ``model`` at ``now``: the call's event will be stored unpriced (cost 0 until a price
        arrives), so cost-based limits and cost-plus prices do not see it yet."""
        if model is None:
            return ()
        costs = self.ledger.costs
        costs.refresh()
        key = (model, now.date())
        book = costs.book
        if self._warnings_book is not book:  # the book changed: forget what the old one said
            self._model_warnings, self._warnings_book = {}, book
        cache = self._model_warnings
        found = cache.get(key)
        if found is None:
            try:
                book.price_for(model, now)
                found = ()
            except BillingError as exc:  # UnknownModel
                found = ({"code": UNPRICED_MODEL, "message": f"{exc.message}; the call's usage will be stored "
                          "unpriced (cost 0) until a price is added (billing costs add)"},)
            if len(cache) > 10_000:
                cache.clear()
            cache[key] = found
        return found

    def _warned(self, decision: Decision, request, now: datetime) -> Decision:
        if request.model is None:
            return decision
        warnings = self.model_warnings(request.model, now)
        return WarnedDecision.of(decision, warnings) if warnings else decision

    def check_batch(self, ops: list[Op]) -> None:
        """Checks of several callers: their customers' state in ONE round trip (one statement
        per kind of read, as the quota writer's batches read it), then each decision. A
        context found changed since it was cached (``StaleContext``) is loaded again and
        the batch read again."""
        for attempt in range(_STALE_TRIES):
            try:
                self._check_batch(ops)
                return
            except StaleContext as exc:
                for customer in exc.customers:
                    self.forget(customer)
                for op in ops:
                    op.reset()
                    op.ctx = None
        for op in ops:
            op.error = _still_changing()

    def _check_batch(self, ops: list[Op]) -> None:
        now = self.clock()
        states: list[UsageState] = []
        with self.conns.read() as conn:
            found = self.contexts(conn, sorted({op.customer for op in ops}), now)
            for op in ops:
                if isinstance(found[op.customer], BillingError):
                    op.error = found[op.customer]
                else:
                    op.ctx = found[op.customer]
            live = [op for op in ops if op.error is None]
            if len(live) == 1:  # alone: the one-customer statements
                states = [usage_state(self.conns, conn, live[0].ctx, now, live[0].request.task, self.budget_reader,
                                      self.context_ttl)]
            elif live:
                states = self._batch_states(conn, live, now)
        for op, state in zip(live, states):
            try:
                op.request = self.estimated(op.request)
                decision = decide(op.ctx.plan, state, op.request)
                self.notices.after(op.ctx, op.request, decision)
                op.result = self._warned(decision, op.request, now)
            except BillingError as exc:
                op.error = exc

    def _batch_states(self, conn: Any, ops: list[Op], now: datetime) -> list[UsageState]:
        """Each op's usage state (ops with their contexts), read for all their customers at once."""
        now_us = to_us(now)
        ctxs = {op.customer: op.ctx for op in ops}
        customers = sorted(ctxs)
        pairs = sorted({(op.customer, op.request.task) for op in ops if op.request.task is not None})
        queries = [batch_state_query(True, [ctxs[c] for c in customers], now_us)]
        if pairs:
            queries.append(batch_task_query(True, pairs, now_us))
        reader, ttl = self.budget_reader, self.context_ttl
        recent = {c: found for c in customers if ctxs[c].budgets and ttl > 0
                  and (found := reader.recent(ctxs[c], now, ttl)) is not None}
        budgeted = [(c, *found) for c in customers if ctxs[c].budgets and c not in recent
                    and (found := reader.statement(True, ctxs[c], now))[0] is not None]
        queries += [q for _, q, _ in budgeted]
        results = run_all(self.conns, conn, queries)
        versions: dict[str, int] = {}
        states = parse_batch_state(results[0], customers, versions)
        stale = stale_of(ctxs.values(), versions)
        if stale:
            raise StaleContext(stale)
        tasks = parse_batch_tasks(results[1], pairs) if pairs else {}
        rows = {c: budget_rows_of(self.conns, conn, ctxs[c], now, reader, (token, found))
                for (c, _, token), found in zip(budgeted, results[len(results) - len(budgeted):])}
        rows.update(recent)
        return [make_state(op.ctx, now, *states[op.customer],
                           tasks.get((op.customer, op.request.task)) if op.request.task is not None else None,
                           rows.get(op.customer))
                for op in ops]

    def reserve(self, customer: str, key: str, quantity: Decimal | int | str = 1, *, ttl: float | None = None,
                request_id: str | None = None, model: str | None = None, task: str | None = None,
                tokens: int | None = None, cost: Decimal | int | str = 0, steps: int | None = None,
                retry: int | None = None, depth: int | None = None, properties: dict | None = None) -> Reservation:
        """Decide and, if allowed or downgraded, hold the units until commit, release or expiry
        (and the call's part in each budget it counts against)."""
        ttl = self.default_ttl if ttl is None else float(ttl)
        if not 0 < ttl <= self.max_ttl:
            raise BillingError(f"ttl must be in (0, {self.max_ttl:g}] seconds", code=ErrorCode.VALIDATION)
        if request_id is not None and not 0 < len(request_id) <= 200:
            raise BillingError("request_id must be 1-200 characters", code=ErrorCode.VALIDATION)
        storable_text("request_id", request_id)
        request = self.estimated(parse_request(customer, key, quantity, model, task, tokens, cost, steps, retry, depth,
                                               properties))
        op = Op("reserve", customer=customer, request=request, ttl=ttl, request_id=request_id)
        reservation = self.writer.submit(op)
        self.notices.after(op.ctx, request, reservation.decision)  # quota.exhausted, task guard: once
        crossed = getattr(reservation.decision, "budget_alerts", ())
        if crossed and self.alerts and self.ledger.alerts is not None:  # soft budgets passed: alert once a window
            self.ledger.alerts.budget_crossed_quietly(customer, crossed, self.clock())
        warnings = self.model_warnings(model, self.clock())
        return replace(reservation, warnings=warnings) if warnings else reservation

    def get(self, reservation_id: str) -> QuotaHold:
        with self.engine.connect() as conn:
            row = conn.execute(select(_hold).where(_hold.c.id == reservation_id)).first()
        if row is None:
            raise BillingError(f"unknown reservation {reservation_id!r}", code=ErrorCode.RESERVATION_NOT_FOUND)
        return QuotaHold(**row._mapping)

    def commit(self, reservation_id: str, event: dict | None = None, *, customer: str | None = None) -> dict[str, Any]:
        """Record the actual usage (one event) and settle the hold, in one transaction. Idempotent.

        Defaults filled into the event: ``customer`` (the hold's), ``id`` (the reservation
        id), ``type`` (the meter's event type), ``timestamp`` (now), ``properties.model``
        (the lane's model) and the plan's task property (the hold's task). ``customer``:
        refuse (``forbidden``) unless the hold is this customer's.

        Returns ``{"reservation_id", "event_id", "status": "committed", "event": "accepted" |
        "duplicate", "late_commit"}``. Again on a committed hold (a retry whose first answer
        was lost): the stored result (``duplicate``) when the fields given here equal the
        stored event's, defaults left out; ``event_conflict`` when they differ.
        ``late_commit``: the hold had expired when the event was recorded (it is recorded and
        counted all the same)."""
        if event is not None and not isinstance(event, dict):
            raise BillingError("the event must be an object", code=ErrorCode.EVENT_INVALID)
        storable_text("reservation_id", reservation_id)
        self.ledger.costs.refresh()  # prices added elsewhere: seen within the book's ttl
        op = Op("commit", reservation_id=reservation_id, event=event, allowed=customer)
        result = self.writer.submit(op)
        alerts = self.ledger.alerts
        if alerts is None or op.alert is None:
            return result
        # the commit is durable: a failed evaluation is logged, never raised (a caller would
        # take it for a failed commit); the customer's next write evaluates again
        if op.alert == READ_AGAIN:  # the post-commit read failed: read again
            if op.ctx is not None:  # (None: no subscription now, so no budget to alert on)
                alerts.evaluate_quietly([op.ctx.customer])
        else:
            ctx, usage = op.alert
            if ctx.plan.compiled.event_read_meters:  # the batch read counters only: read as decisions do
                alerts.evaluate_quietly([ctx.customer])
            else:
                alerts.record_quietly(ctx, usage, self.clock())
        return result

    def release(self, reservation_id: str, *, customer: str | None = None) -> dict[str, Any]:
        """Return the held units now (idempotent). A committed reservation cannot be released."""
        storable_text("reservation_id", reservation_id)
        return self.writer.submit(Op("release", reservation_id=reservation_id, allowed=customer))

    def purge_expired(self, older_than: timedelta = timedelta(days=1)) -> int:
        """Mark holds expired longer than ``older_than`` as ``expired`` (housekeeping only:
        expired holds already stopped counting; a late commit of one is still recorded)."""
        cutoff = to_us(self.clock() - older_than)
        with self.engine.begin() as conn:
            return conn.execute(update(_hold).where(_hold.c.status == HoldStatus.HELD.value, _hold.c.expires_at <= cutoff)
                                .values(status=HoldStatus.EXPIRED.value, settled_at=cutoff)).rowcount

    # ---------------------------------------------------------------- alerts
    def evaluate_alerts(self, customer: str) -> list[Alert]:
        """Record budget thresholds newly reached this period and queue one webhook for each
        (``alert.triggered``, once per threshold and period: ``billing.alerts.events.enqueue_alert``).
        Returns the alerts that fired now (each fires once per period)."""
        if self.ledger.alerts is None:
            return []
        storable_text("customer", customer)
        return self.ledger.alerts.evaluate([customer])

    def _record_alerts(self, ctx: Context, usage: dict[str, MeterUsage], now: datetime) -> list[Alert]:
        if self.ledger.alerts is None:
            return []
        return self.ledger.alerts.record(ctx, usage, now)

    # --------------------------------------------------------------- metrics
    def late_commits(self, since: datetime, until: datetime, *, customer: str | None = None,
                     limit: int = 100) -> dict[str, Any]:
        """Commits recorded from ``since`` to ``until`` (both included) after their hold had
        expired: the total and, per customer and meter (most first, at most ``limit``), the
        count, the units their holds had held, the last one and the longest delay past
        expiry in seconds."""
        storable_text("customer", customer)
        with self.conns.read() as conn:
            total, rows = late_commits_by_meter(self.conns, conn, to_us(since), to_us(until), customer=customer,
                                                limit=limit)
        return {"since": _iso(since), "until": _iso(until), "late_commits": total,
                "by_meter": [{"customer": c, "meter": m, "late_commits": n,
                              "held_units": dec_str(Decimal(units) / MICRO), "last_at": _iso(from_us(last)),
                              "max_delay_seconds": dec_str(Decimal(delay) / MICRO)}
                             for c, m, n, units, last, delay in rows]}

    # ----------------------------------------------------------------- usage
    def usage(self, customer: str) -> dict[str, Any]:
        """The customer's current period: per charge used / held / included / remaining,
        spend so far, credits, and the live holds count."""
        storable_text("customer", customer)
        now = self.clock()
        with self.conns.read() as conn:
            for attempt in range(_STALE_TRIES):
                ctx = load_context(self.conns, conn, self.catalog, customer, now)
                try:
                    state = usage_state(self.conns, conn, ctx, now, None)
                    break
                except StaleContext:  # changed while read: read it again
                    continue
            else:
                raise _still_changing()
            late = late_commit_count(self.conns, conn, customer, to_us(ctx.period.start), to_us(ctx.period.end))
        plan = ctx.plan
        charges = []
        total = ZERO
        for c in charge_spends(plan, state):  # the invoice's arithmetic (billing.rating.arithmetic)
            total += c.spend
            charges.append({"charge": c.charge, "meter": c.meter, "policy": c.policy,
                            "used": dec_str(c.used), "held": dec_str(c.held),
                            "included": None if c.included is None else dec_str(c.included),
                            "remaining_included": None if c.remaining_included is None
                            else dec_str(c.remaining_included),
                            "spend": dec_str(c.spend), "spend_cap": None if c.spend_cap is None else dec_str(c.spend_cap)})
        meters = {m.key: {"used": dec_str(state.usage.get(m.key, MeterUsage()).units),
                          "held": dec_str(state.held.get(m.key, MeterUsage()).units),
                          "events": state.usage.get(m.key, MeterUsage()).events,
                          "provider_cost": dec_str(state.usage.get(m.key, MeterUsage()).cost)}
                  for m in plan.meters}
        credits = sum((a for a, _ in plan_credit_amount(plan, ctx.seats)), ZERO) + sum(
            (a for a, _ in state.credit_balances.values()), ZERO)
        return {"customer": customer, "plan": {"id": plan.plan, "version": plan.version},
                "currency": plan.currency, "seats": ctx.seats,
                "period": {"start": _iso(ctx.period.start), "end": _iso(ctx.period.end)},
                "meters": meters, "charges": charges, "spend": dec_str(total),
                "spend_cap": None if plan.spend_cap is None else dec_str(plan.spend_cap),
                "credits": dec_str(credits), "credits_remaining": dec_str(max(ZERO, credits - total)),
                "late_commits": late,
                "payment_overdue": state.payment_failed_at is not None and now - state.payment_failed_at
                >= timedelta(days=plan.dunning.deny_after_days)}


_STALE_TRIES = 3  # a context changing again and again while read: answered 503, retried by the caller


def _still_changing() -> BillingError:
    return BillingError("the customer's plan or subscription kept changing while read; retry",
                        code=ErrorCode.UNAVAILABLE)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")
