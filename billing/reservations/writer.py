"""Reserve, commit and release in group transactions (the write half of the quota hot path).

Concurrent calls in one process are combined: a caller that finds a free slot (at most
``leaders`` batches run at once, default one; SQLite has a single writer anyway) takes
every queued operation, runs them all as ONE transaction and wakes their callers, who see
their result only after that transaction committed. A batch costs two round trips on
PostgreSQL whatever its size (psycopg pipeline mode), so under load a leader first waits a
moment (``Combiner``'s ``gather``, 0.5 ms at most on PostgreSQL) for the operations the
last batch had:

1. ``BEGIN``; ``pg_advisory_xact_lock`` on every reserving customer, in ascending key order
   (so batches never deadlock each other); each customer's state (counters, live holds,
   rate windows, task usage: read after the locks, so it includes every hold granted
   before); earlier holds with the same request ids; the holds to commit or release and
   their customers' subscriptions.
2. Decide the reservations in arrival order, adding each grant to the customer's state
   before the next decision (so a batch never grants more than lone callers would); then
   send the holds, the rate-window counts, the commits' events with their counters, hourly
   rollups, hold settlements and task usage (``billing.reservations.events``), the releases, ``COMMIT``,
   and — after the commit — the committed usage of customers with budget alerts (each
   committer reads after its own commit, so of two racing commits at least one sees both:
   a threshold is never missed).

A reservation is durable before it is answered (``synchronous_commit`` stays on), and so
is a commit's event; release-only batches skip the fsync (a lost release only keeps a
hold until it expires), and so do batches whose every caller commits a durable write
itself before answering (``billing.reservations.durability``: the ``Idempotency-Key``
record of a fast-path request), which flushes the batch's commit with it. A batch that fails on a database error before its ``COMMIT`` is
retried (deadlocks) or split, each operation in a transaction of its own, so one bad
operation never fails its neighbours; a batch is never run again once it may have
committed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from psycopg.pq import ExecStatus

from billing.errors import BillingError, ErrorCode
from billing.reservations import durability
from billing.reservations.combiner import Combiner
from billing.store.cost_prices import cursor_fetch
from billing.store.rollup_sql import DIMENSIONS_SQL, dimensions_of
from billing.ledger.counters import CounterPlanner, subscription_views, to_micro
from billing.quota.alerts import alerts_on
from billing.ledger.prepare import warnings_of
from billing.reservations.commits import committed, event_for, prepare_commit, recommit, same_event, stored_props
from billing.reservations.events import contributions, not_inserted, task_rows, write_pg, write_sqlite
from billing.reservations.sql import (
    MICRO, PICO, Connections, _utc, batch_counters_query, batch_request_query, batch_state_query, batch_task_query,
    StaleContext, budget_rows_of, counter_values, holds_query, id_list, insert_holds, make_state, parse_batch_state,
    parse_batch_tasks, run_all, stale_of)
from billing.reservations.budget_sql import held_budgets
from billing.reservations.types import READ_AGAIN, Hold, HoldStatus, Op, Reservation, request_json
from billing.store.partitions import HORIZON, HORIZON_SQL, archived_message
from billing.store.types import from_us, to_us
from billing.quota.decide import MeterUsage, TaskUsage, decide

if TYPE_CHECKING:
    from billing.reservations.holds import Quota

_COMMAND_OK = ExecStatus.COMMAND_OK


class QuotaWriter:
    """Batched reserve / commit / release over ``Connections`` for one ``Quota``."""

    def __init__(self, quota: "Quota", conns: Connections, *, leaders: int | None = None,
                 gather: float | None = None):
        self.quota = quota
        self.conns = conns
        # over a network a batch costs round trips and a durable commit whatever its size: gather
        # (0.5 ms at most, under load only); SQLite's in-process batches cost little to start
        if gather is None:
            gather = 0.0005 if conns.pg else 0.0
        self.combiner = Combiner(self._run_batch, leaders=leaders or 1, gather=gather)

    def submit(self, op: Op) -> Any:
        op.later = durability.current()
        return self.combiner.submit(op)

    # -------------------------------------------------------------- batching
    def _run_batch(self, ops: list[Op]) -> None:
        error: BaseException | None = None
        for _attempt in range(3):
            try:
                deferred = self._transaction(ops)
            except _NotCommitted as exc:  # rolled back: safe to run again
                error = exc.__cause__
                for op in ops:
                    op.reset()
                if self._retryable(error):
                    continue
                break
            if deferred:  # a second commit of an event id already in the batch: decided by the stored one
                self._run_batch(deferred)
            return
        if len(ops) == 1:
            ops[0].error = _answer(error)
            return
        for op in ops:  # one bad operation must not fail its neighbours
            try:
                self._transaction([op])
            except _NotCommitted as exc:
                op.reset()
                op.error = _answer(exc.__cause__)

    @staticmethod
    def _retryable(exc: BaseException | None) -> bool:
        """Deadlocks, serialization failures and contexts found changed (``StaleContext``)."""
        if isinstance(exc, StaleContext):
            return True
        state = getattr(getattr(exc, "diag", None), "sqlstate", None) or getattr(exc, "sqlstate", None)
        return state in ("40P01", "40001")

    def _transaction(self, ops: list[Op]) -> list[Op]:
        """One transaction for ``ops``. Raises ``_NotCommitted`` when it surely rolled back;
        any other exception means it may have committed (the connection broke). Returns
        the ops deferred to a later transaction."""
        conns = self.conns
        tx = _Tx()
        with conns.write() as conn:
            try:
                with conns.pipeline(conn):
                    self._body(conn, ops, tx)
            except BillingError:
                raise
            except Exception as exc:  # noqa: BLE001
                if not tx.committed():
                    try:
                        if (not conn.closed) if conns.pg else conn.in_transaction:
                            conn.execute("ROLLBACK")
                    except Exception:  # noqa: BLE001 - the connection is discarded anyway
                        pass
                    if tx.sure_not_committed(conns.pg, conn):
                        raise _NotCommitted() from exc
                    raise
                tx.after_failed = True  # committed; only a read after the commit failed
            # committed: what follows must not raise (the batch is never run twice)
            try:
                tx.finish(conn)
            except Exception:  # noqa: BLE001
                tx.after_failed = True
            self._committed_events(tx)
            if tx.after_failed:
                for op in tx.accepted_ops():
                    op.alert = READ_AGAIN
        return tx.deferred

    def _committed_events(self, tx: "_Tx") -> None:
        """The budgets' reader learns the events this transaction inserted (after its COMMIT;
        never raises: a reader that did not learn them reads them)."""
        reader = self.quota.budget_reader
        try:
            mine: dict[str, tuple[Any, list]] = {}
            for op, p, _hold in tx.commits:
                eid = tx.inserted_ids.get((p.customer, p.event_id))
                if eid is not None and op.ctx is not None and op.ctx.budgets and op.ctx.customer == p.customer:
                    mine.setdefault(p.customer, (op.ctx, []))[1].append((p, eid))
            now = from_us(tx.now_us)
            for ctx, events in mine.values():
                reader.committed(ctx, now, events)
        except Exception:  # noqa: BLE001
            for op, p, _hold in tx.commits:
                reader.forget(p.customer)

    # ------------------------------------------------------------------ body
    def _body(self, conn: Any, ops: list[Op], tx: "_Tx") -> None:
        q, pg = self.quota, self.conns.pg
        now = q.clock()
        now_us = to_us(now)

        def execute(sql: str, params: Any = ()) -> Any:
            cur = conn.cursor()
            cur.execute(sql.replace("?", "%s") if pg else sql, params)
            return cur

        reserves = self._with_contexts(conn, [op for op in ops if op.kind == "reserve"], now)
        settles = [op for op in ops if op.kind != "reserve"]
        # ---- round 1: lock, read
        read = self._lock_and_read(execute, reserves, settles, now_us)
        # ---- decide; round 2: write everything, COMMIT, read for alerts
        hold_rows: list[tuple] = []
        rates: dict[tuple[str, str, int], list[int]] = {}
        in_batch: dict[tuple[str, str], tuple[Op, dict]] = {}
        for op in reserves:
            self._reserve_one(op, now, now_us, read, in_batch, hold_rows, rates)
        _write_grants(execute, pg, hold_rows, rates)
        book = q.ledger.book  # the commits' events are priced with this book or a newer one
        commits, releases, tx.deferred = self._settle_plan(conn, settles, read, now, now_us)
        again = q.ledger.settle_unpriced(cursor_fetch(execute), pg, [p for _op, p, _hold in commits], book)
        if again:  # prices were added since this process last read them
            commits = [(op, again.get(id(p), p), hold) for op, p, hold in commits]
        tx.commits, tx.now_us = commits, now_us
        tx.same = lambda op, hold, event: same_event(q.ledger, op.event, hold, op.ctx, event, now, now_us)
        if commits:
            tx.inserted = self._write_commits(execute, commits, read, now_us)
        if releases:
            where, params = id_list(pg, "id", sorted({hold[0] for _op, hold in releases}))
            who, customers = id_list(pg, "customer_id", sorted({hold[1] for _op, hold in releases}))
            cur = execute(f"UPDATE quota_hold SET status = 'released', settled_at = ? WHERE {who} AND {where} "
                          "AND status = 'held' RETURNING id", [now_us, *customers, *params])
            # SQLite cannot commit while a RETURNING statement is unfinished: read it now
            tx.releases = (releases, cur if pg else cur.fetchall())
        tx.commit_cur = execute("COMMIT")
        tx.sqlite_committed = not pg
        if q.alerts:
            self._read_for_alerts(execute, commits, tx)
        tx.run_all = lambda queries, returns_rows=True: run_all(self.conns, conn, queries, returns_rows=returns_rows)

    def _with_contexts(self, conn: Any, reserves: list[Op], now: datetime) -> list[Op]:
        """The reservations whose customer context loads (cached; loaded on a miss), before
        the transaction; the others are answered with the error."""
        for op in reserves:
            try:
                op.ctx = self.quota.context(conn, op.customer, now)
            except BillingError as exc:
                op.error = exc
        return [op for op in reserves if op.error is None]

    def _lock_and_read(self, execute: Callable, reserves: list[Op], settles: list[Op], now_us: int) -> "_Read":
        """Round 1: ``BEGIN``, the customers' advisory locks in key order, then every read
        the batch decides on (one round trip)."""
        q, pg = self.quota, self.conns.pg
        execute("BEGIN" if pg else "BEGIN IMMEDIATE")
        if pg and not reserves and not any(op.kind == "commit" for op in settles):
            execute("SET LOCAL synchronous_commit TO OFF")  # releases only (see the module docstring)
        elif pg and all(op.later is not None for op in (*reserves, *settles)):
            # every caller commits a durable write before it answers (billing.reservations.durability)
            execute("SET LOCAL synchronous_commit TO OFF")
            for op in (*reserves, *settles):
                op.later.owed = True
        customers = sorted({op.customer for op in reserves})
        if pg and customers:
            keys = sorted({q.lock_key(c) for c in customers})
            execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%b::bigint[]) AS k", (keys,))
        if pg and any(op.kind == "commit" for op in settles):
            # the lock the events' insert takes anyway, taken before the subscriptions are read
            # (with the holds): a subscription change in flight (its recount holds SHARE ROW
            # EXCLUSIVE) commits first and is read; a later one waits for this batch. Read
            # before it, a change committed in between left the events counted under the
            # subscriptions it replaced (``Ledger.record`` reads them after its insert).
            execute("LOCK TABLE usage_event IN ROW EXCLUSIVE MODE")
        ctxs = {}
        for op in reserves:
            ctxs.setdefault(op.customer, op.ctx)
        state_cur = execute(*batch_state_query(pg, [ctxs[c] for c in customers], now_us)) if customers else None
        pairs = sorted({(op.customer, op.request.task) for op in reserves if op.request.task is not None})
        task_cur = execute(*batch_task_query(pg, pairs, now_us)) if pairs else None
        reader, now = q.budget_reader, from_us(now_us)
        budget_curs = {c: (execute(*found[0]), found[1]) for c in customers
                       if ctxs[c].budgets and (found := reader.statement(pg, ctxs[c], now))[0] is not None}
        rids = sorted({(op.customer, op.request_id) for op in reserves if op.request_id is not None})
        rid_cur = execute(*batch_request_query(pg, rids)) if rids else None
        hold_cur = execute(*holds_query(pg, sorted({op.reservation_id for op in settles}))) if settles else None
        # the archive horizon, read after the lock above: an archive moves it before dropping months
        horizon_cur = (execute(HORIZON_SQL.replace("%s", "?"), (HORIZON,))
                       if any(op.kind == "commit" for op in settles) else None)
        dims_cur = execute(DIMENSIONS_SQL) if horizon_cur is not None else None  # the commits' rollups

        # the round trip
        versions: dict[str, int] = {}
        read = _Read(parse_batch_state(state_cur.fetchall(), customers, versions) if state_cur is not None else {},
                     parse_batch_tasks(task_cur.fetchall(), pairs) if task_cur is not None else {},
                     {(r[0], r[1]): r[2:] for r in rid_cur.fetchall()} if rid_cur is not None else {})
        stale = stale_of(ctxs.values(), versions)
        if stale:  # a context changed since it was cached: roll back, load it again, run again
            for customer in stale:
                q.forget(customer)
            raise StaleContext(stale)
        read.budget_rows = {c: budget_rows_of(self.conns, _Executor(execute), ctxs[c], now, reader,
                                              (token, cur.fetchall()))
                            for c, (cur, token) in budget_curs.items()}
        if horizon_cur is not None:
            found = horizon_cur.fetchall()
            read.horizon = int(found[0][0]) if found and found[0][0] is not None else None
        if dims_cur is not None:
            read.rollup_dims = dimensions_of(dims_cur.fetchall())
        if hold_cur is not None:
            holds, stored, sub_rows = read.holds, read.stored, read.sub_rows
            for row in hold_cur.fetchall():
                if row[0] not in holds:
                    holds[row[0]] = hold = Hold(*row[:7], row[14], row[15], row[16], row[17], row[21])
                    if row[18] is not None:
                        stored[row[0]] = (hold.event_id, row[18], int(row[19]), stored_props(row[20]))
                if row[8] is not None:
                    sub_rows[row[8]] = (row[8], row[1], row[9], row[10], _utc(row[11]), _utc(row[12]),
                                        _utc(row[13]), row[7])
        return read

    def _write_commits(self, execute: Callable, commits: list[tuple], read: "_Read", now_us: int) -> Any:
        """Send the commits' events with their counters, hourly rollups, hold settlements and
        task usage; returns what ``write_pg``/``write_sqlite`` return (the inserted keys)."""
        q, sub_rows = self.quota, read.sub_rows
        views = subscription_views([r[:7] for r in sub_rows.values()], {r[1]: r[7] for r in sub_rows.values()},
                                   q.catalog)
        planner = CounterPlanner(views)
        for op, _p, _hold in commits:  # the period each context already knows (same cycle, same
            if op.ctx is not None:    # bounds); an event outside it is placed by the planner itself
                planner.prime(op.ctx.subscription_id, to_us(op.ctx.period.start), to_us(op.ctx.period.end))
        contrib = contributions(planner, commits)
        tasks = task_rows(planner, commits)
        if self.conns.pg:  # the events' months need their partitions (billing.store.partitions)
            stamps = [p.ts for _op, p, _hold in commits]
            q.ledger.months.ensure(_runner(execute), min(stamps), max(stamps), stamps)
            return write_pg(execute, commits, contrib, tasks, now_us, read.rollup_dims)
        return write_sqlite(execute, commits, contrib, tasks, now_us, read.rollup_dims)

    def _read_for_alerts(self, execute: Callable, commits: list[tuple], tx: "_Tx") -> None:
        """After the COMMIT: the committed usage of the committing customers with budget alerts."""
        for op, p, _hold in commits:
            ctx = op.ctx
            if ctx is not None and alerts_on(ctx.plan):
                tx.alert_ctx.setdefault(p.customer, ctx)
        if tx.alert_ctx:
            tx.alert_cur = execute(*batch_counters_query(
                self.conns.pg, sorted((c, to_us(ctx.period.start)) for c, ctx in tx.alert_ctx.items())))

    # ---------------------------------------------------------------- reserve
    def _reserve_one(self, op: Op, now, now_us: int, read: "_Read", in_batch, hold_rows, rates) -> None:
        ctx, req, customer = op.ctx, op.request, op.customer
        states, tasks = read.states, read.tasks
        asked = request_json(req)
        if op.request_id is not None and _answered_before(op, asked, read.prior, in_batch):
            return
        usage, held, rate_counts = states[customer]
        task_usage = tasks.get((customer, req.task)) if req.task is not None else None
        budget_rows = read.budget_rows.get(customer)
        try:
            decision = decide(ctx.plan, make_state(ctx, now, usage, held, rate_counts, task_usage, budget_rows), req)
        except BillingError as exc:
            op.error = exc
            return
        if not decision.granted:
            op.result = Reservation(None, decision)
            return
        hold_id = f"rsv_{uuid.uuid4().hex}"
        expires_us = now_us + int(op.ttl * 1_000_000)
        meter = ctx.plan.meter(decision.meter)
        task_tokens = req.tokens
        if task_tokens is None:
            task_tokens = int(req.quantity) if (meter.property or "").endswith("_tokens") else 0
        steps = (req.steps if req.steps is not None else 1) if req.task else 0
        tokens = task_tokens if req.task else 0
        units_micro, cost_pico = to_micro(decision.units), int(req.cost * PICO)
        payload = decision.to_json()
        payload["_request"] = asked
        hold_rows.append((hold_id, customer, op.request_id or hold_id, req.key, decision.meter, meter.event_type,
                          to_us(ctx.period.start), units_micro, cost_pico, tokens, steps, req.task,
                          decision.lane.model, decision.lane.tier, str(decision.outcome), str(decision.reason),
                          orjson.dumps(payload).decode(), HoldStatus.HELD.value, now_us, expires_us,
                          budgets := held_budgets(ctx, decision)))
        _count_grant(op, decision, states, tasks, rates, units_micro, cost_pico, steps, tokens)
        if budgets is not None:  # the next decision of this batch counts the grant as a fresh read would
            read.budget_rows.setdefault(customer, []).append(("h", budgets, now_us, 0, 0))
        op.result = Reservation(hold_id, decision, from_us(expires_us), status=HoldStatus.HELD)
        if op.request_id is not None:
            in_batch[(customer, op.request_id)] = (op, asked)

    # ----------------------------------------------------------------- commit
    def _settle_plan(self, conn, settles: list[Op], read: "_Read", now, now_us: int):
        """Validate commits and releases against their holds; prepare the commits' events.
        A commit of a committed hold is answered from the event stored then; an event dated
        before the archive horizon is refused (``event_archived``)."""
        q = self.quota
        holds, stored, horizon = read.holds, read.stored, read.horizon
        ledger = q.ledger
        commits, releases, deferred = [], [], []
        seen: set[tuple[str, str]] = set()
        seen_holds: set[str] = set()
        for op in settles:
            hold = holds.get(op.reservation_id)
            if hold is None:
                op.error = BillingError(f"unknown reservation {op.reservation_id!r}",
                                        code=ErrorCode.RESERVATION_NOT_FOUND)
                continue
            hid, status = hold.id, hold.status
            if op.allowed is not None and op.allowed != hold.customer:
                op.error = BillingError("this API key is restricted to another customer", code=ErrorCode.FORBIDDEN)
                continue
            if op.kind == "release":
                if status == HoldStatus.COMMITTED:
                    op.error = BillingError(f"reservation {hid} is committed", code=ErrorCode.INVALID_TRANSITION)
                elif status in (HoldStatus.RELEASED, HoldStatus.EXPIRED):
                    op.result = {"reservation_id": hid, "status": status}
                else:
                    releases.append((op, hold))
                continue
            if status == HoldStatus.RELEASED:
                op.error = BillingError(f"reservation {hid} was released; reserve again",
                                        code=ErrorCode.INVALID_TRANSITION)
                continue
            if hid in seen_holds:  # a second commit of a hold this batch settles: after it
                op.queued, op.ctx = False, None
                deferred.append(op)
                continue
            try:
                op.ctx = q.context(conn, hold.customer, now)
            except BillingError:
                op.ctx = None  # no active subscription now: the event is still recorded
            try:
                if status == HoldStatus.COMMITTED:  # a retry (its first answer lost?) or a different event
                    op.result = recommit(ledger, op.event, hold, op.ctx, stored.get(hid), now, now_us)
                    continue
                p = prepare_commit(ledger, event_for(op.event, hold, op.ctx, now), now_us)
                if horizon is not None and p.ts < horizon:
                    raise BillingError(archived_message(horizon), code=ErrorCode.EVENT_ARCHIVED)
            except BillingError as exc:
                op.error = exc
                continue
            if (p.customer, p.event_id) in seen:
                op.queued, op.ctx = False, None
                deferred.append(op)
                continue
            seen.add((p.customer, p.event_id))
            seen_holds.add(hid)
            commits.append((op, p, hold))
        return commits, releases, deferred


class _Executor:
    """The transaction's ``execute`` as a driver connection for ``run_all`` (a budget read
    again inside the batch's transaction, under its locks)."""

    def __init__(self, execute: Callable) -> None:
        self._execute = execute

    def cursor(self) -> "_Executor":
        return self

    def execute(self, sql: str, params: Any = ()) -> None:
        self._cur = self._execute(sql.replace("%s", "?"), params)

    def fetchall(self) -> list:
        return self._cur.fetchall()

    def close(self) -> None:
        pass


class _Read:
    """What round 1 read: per customer (usage, holds, rate counts), task usage, earlier holds
    with the same request ids, and the holds to settle with their committed events and
    customers' subscriptions."""

    __slots__ = ("states", "tasks", "prior", "holds", "stored", "sub_rows", "budget_rows", "horizon", "rollup_dims")

    def __init__(self, states: dict, tasks: dict, prior: dict) -> None:
        self.states = states
        self.tasks = tasks
        self.prior = prior
        self.holds: dict[str, Hold] = {}
        self.stored: dict[str, tuple] = {}  # hold id -> (event id, type, ts, properties) of a committed hold
        self.sub_rows: dict[int, tuple] = {}
        self.budget_rows: dict[str, list] = {}  # customer -> rows of budget_sql.budget_query (and this batch's grants)
        self.horizon: int | None = None  # events before it were archived (billing.store.partitions)
        self.rollup_dims: tuple[str, ...] = ()  # the hourly rollups' dimensions (commit_rollups)


class _NotCommitted(Exception):
    """A batch transaction that surely rolled back (its cause is the database error)."""


class _Tx:
    """What one batch transaction sent, to tell whether it committed and to finish it."""

    def __init__(self) -> None:
        self.commit_cur: Any = None
        self.sqlite_committed = False
        self.deferred: list[Op] = []
        self.commits: list[tuple] = []
        self.inserted: Any = None  # PostgreSQL: cursor of inserted keys; SQLite: the keys with their ids
        self.inserted_ids: dict[tuple[str, str], int] = {}  # (customer, event id) -> row id, once finished
        self.releases: tuple | None = None  # (ops and holds, RETURNING rows or cursor)
        self.alert_ctx: dict[str, Any] = {}  # customer -> context, for budget alerts
        self.alert_cur: Any = None
        self.after_failed = False
        self.now_us = 0
        self.run_all: Callable | None = None
        self.same: Callable | None = None  # (op, hold, stored event) -> bool: reservations.commits.same_event

    def committed(self) -> bool:
        if self.commit_cur is None:
            return False
        if self.sqlite_committed:
            return True
        result = self.commit_cur.pgresult
        return result is not None and result.status == _COMMAND_OK

    def sure_not_committed(self, pg: bool, conn: Any) -> bool:
        """No COMMIT was sent, or the server answered the pipeline and the COMMIT was not ok."""
        if self.commit_cur is None or not pg:
            return True
        return not (conn.closed or conn.broken)

    def accepted_ops(self) -> list[Op]:
        return [op for op, _p, _h in self.commits
                if op.result is not None and op.result.get("event") == "accepted"]

    def finish(self, conn: Any) -> None:
        """After the commit: the outcome of releases and commits, the alerts' usage."""
        if self.releases is not None:
            releases, cur = self.releases
            done = {r[0] for r in (cur if isinstance(cur, list) else cur.fetchall())}
            for op, hold in releases:
                if hold[0] in done or hold[2] == HoldStatus.RELEASED:
                    op.result = {"reservation_id": hold[0], "status": HoldStatus.RELEASED}
                else:
                    op.error = BillingError(f"reservation {hold[0]} was settled meanwhile",
                                            code=ErrorCode.INVALID_TRANSITION)
        if not self.commits:
            return
        inserted = self.inserted_ids = self.inserted if isinstance(self.inserted, dict) else {
            (c, e): int(i) for c, e, i in self.inserted.fetchall()}
        rest = []
        for item in self.commits:
            op, p, hold = item
            if (p.customer, p.event_id) in inserted:
                op.result = committed(op.reservation_id, p.event_id, "accepted", late=hold.late_at(self.now_us),
                                      warnings=_warnings(p))
            else:
                rest.append(item)
        usage: dict[str, tuple] = {c: (ctx, {}) for c, ctx in self.alert_ctx.items()}
        if self.alert_cur is not None:
            for c, m, u, cost, n in counter_values(self.alert_cur.fetchall()):
                usage[c][1][m] = MeterUsage(Decimal(u) / MICRO, Decimal(cost) / PICO, int(n))
        for op, p, _hold in self.commits:
            if op.result is not None:
                op.alert = usage.get(p.customer)
        for op, p, hold, status in not_inserted(self.run_all, rest, self.now_us, self._same):
            if status == "duplicate":
                op.result = committed(op.reservation_id, p.event_id, "duplicate", late=hold.late_at(self.now_us),
                                      warnings=_warnings(p))
            else:
                op.error = BillingError("an event with this id exists with different content; nothing changed",
                                        code=ErrorCode.EVENT_CONFLICT)

    def _same(self, op: Op, hold: Hold, stored: tuple) -> bool:
        """``same_event`` after the commit: an event it cannot compare (one the ledger would
        reject with the stored event's fields) is not the same."""
        try:
            return self.same(op, hold, stored)
        except BillingError:
            return False


def _runner(execute: Callable) -> Callable[[str, tuple, bool], list]:
    """``billing.store.partitions.Run`` over this batch's ``execute``."""
    def run(sql: str, params: tuple, rows: bool) -> list:
        cur = execute(sql, params)
        return cur.fetchall() if rows else []
    return run


def _conflict(request_id: str) -> BillingError:
    return BillingError(f"request id {request_id!r} was used for another reservation", code=ErrorCode.CONFLICT)


def _warnings(p) -> list[dict] | None:
    """A commit's warnings: its event was stored unpriced or unmetered."""
    return warnings_of(p) if p.unpriced or p.unmetered else None


def _answered_before(op: Op, asked: dict, prior: dict, in_batch: dict) -> bool:
    """Answer a reservation whose request id was seen before (stored, or granted earlier in
    this batch): the same reservation replayed, or a conflict when the request differs."""
    row = prior.get((op.customer, op.request_id))
    if row is not None:
        stored = json.loads(row[3])
        if stored.pop("_request", None) != asked:
            op.error = _conflict(op.request_id)
        else:
            op.result = Reservation(row[0], stored, from_us(row[2]), replayed=True, status=row[1])
        return True
    first = in_batch.get((op.customer, op.request_id))  # granted earlier in this batch
    if first is None:
        return False
    first_op, first_asked = first
    if first_asked != asked:
        op.error = _conflict(op.request_id)
    else:
        r = first_op.result
        op.result = Reservation(r.id, r.decision.to_json(), r.expires_at, replayed=True, status=r.status)
    return True


def _count_grant(op: Op, decision: Any, states: dict, tasks: dict, rates: dict, units_micro: int, cost_pico: int,
                 steps: int, tokens: int) -> None:
    """Add a grant to its customer's state (holds, rate windows, task usage), so the next
    decision of this batch counts it exactly as a fresh read would."""
    customer, task = op.customer, op.request.task
    held = states[customer][1] = dict(states[customer][1])
    held[decision.meter] = held.get(decision.meter, MeterUsage()) + MeterUsage(
        Decimal(units_micro) / MICRO, Decimal(cost_pico) / PICO, 1)
    if decision.rate_windows:
        rate_counts = states[customer][2] = dict(states[customer][2])
        for charge, start, end in decision.rate_windows:
            rate_counts[charge] = rate_counts.get(charge, 0) + 1
            slot = rates.setdefault((customer, charge, start), [end, 0])
            slot[1] += 1
    if task is not None:
        t = tasks.get((customer, task)) or TaskUsage()
        tasks[(customer, task)] = TaskUsage(t.steps + steps, t.tokens + tokens, t.cost + Decimal(cost_pico) / PICO)


def _write_grants(execute: Callable, pg: bool, hold_rows: list[tuple], rates: dict) -> None:
    """Insert the batch's holds and add its grants to the rate-window counts (key order)."""
    if hold_rows:
        execute(*insert_holds(pg, hold_rows))
    for (customer, charge, start), (end, n) in sorted(rates.items()):
        execute("INSERT INTO quota_rate_window (customer_id, charge, window_start, window_end, count) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (customer_id, charge, window_start) "
                "DO UPDATE SET count = quota_rate_window.count + excluded.count",
                (customer, charge, start, end, n))


def _answer(error: BaseException | None) -> BaseException | None:
    """What a caller is answered for a batch that failed: a context that kept changing
    while read is a 503 to retry (``service_unavailable``), not a 500."""
    if isinstance(error, StaleContext):
        return BillingError("the customer's plan or subscription kept changing while read; retry",
                            code=ErrorCode.UNAVAILABLE)
    return error
