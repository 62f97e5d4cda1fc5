"""Driver-level SQL for the quota hot path: connections, a customer's context and usage state.

``check``, ``reserve`` and ``commit`` run many times a second, so they skip SQLAlchemy's
statement compilation and pool pre-ping and talk to the driver directly:

* ``Connections`` hands out plain driver connections: on PostgreSQL psycopg connections in
  autocommit mode (a transaction is an explicit ``BEGIN ... COMMIT``, so a whole
  transaction can be sent in one pipeline), kept in a small free list; on a SQLite file
  one autocommit ``sqlite3`` connection per reading thread and one writer connection.
* ``load_context`` reads who the customer is right now (plan, period, seats, credits,
  dunning, contract overrides) in one statement; ``load_contexts`` reads many customers'
  with the same one statement (``billing.reservations.context_sql``), not one per customer.
* ``STATE_SQL`` / ``usage_state`` read committed usage (the counters), live holds and
  rate-window counts in one statement (one snapshot); for the meters the counters cannot
  rate (disputes, unique counts, per-transaction sums) the same statement reads the
  events (``quota_exact``).

All instants are integer microseconds at rest, except the ``UTCDateTime`` columns of the
accounts tables, which SQLite stores as naive UTC text: ``_utc`` parses both forms.
"""

from __future__ import annotations

import threading

import orjson
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine

from billing.catalog import Catalog, Plan
from billing.catalog.overrides import effective_plan
from billing.contracts.repository import overrides_by_subscription
from billing.errors import BillingError, ErrorCode
from billing.ledger.counters import ALL_EVENTS
from billing.reservations import exact as quota_exact
from billing.reservations.context_sql import context_query, context_rows
from billing.reservations.budget_sql import BudgetReader, budget_usage, budgets_of
from billing.store.db import SQLITE_MMAP
from billing.store.types import to_us
from billing.store.wide import HELD, WIDE, held_sum_sql, held_sums, join
from billing.quota.decide import MeterUsage, TaskUsage, UsageState, frozen
from billing.quota.guards import with_cost_guard
from billing.rating.periods import BillingCycle, Period

MICRO = Decimal(1_000_000)
PICO = Decimal(10) ** 12
_ZERO = Decimal(0)


@dataclass(frozen=True)
class Context:
    """Who the customer is right now: plan, period, seats, credits, dunning."""

    customer: str
    subscription_id: int
    plan: Plan
    period: Period
    seats: int
    credits: dict  # grant id -> (remaining balance, applies_to)
    payment_failed_at: datetime | None
    timezone: str = "UTC"
    budgets: tuple = ()  # the customer's budgets (billing.quota.budgets.Budget), by id
    # ``customer.context_version`` when loaded (billing.store.context_stamp): a decision that
    # reads another version with its usage reloads the context first (``StaleContext``)
    version: int | None = None
    # the first instant after loading at which the rows read say something changes (a
    # subscription starting or ending, a seat change, a credit starting or expiring, an
    # override's window, the period's end): a cached context is not used from then on
    valid_until: datetime | None = None
    # [start, end) of the subscription (end None: open): the times its events are counted in
    # its counters (``ledger.counters``), the period's ``*`` counter among them
    covers: tuple[datetime, datetime | None] | None = None


class StaleContext(Exception):
    """A decision read a ``context_version`` other than its cached context's: reload it."""

    def __init__(self, customers):
        super().__init__(f"stale quota context of {sorted(customers)}")
        self.customers = sorted(customers)


def check_version(ctx: Context, version: int | None) -> None:
    """Raise ``StaleContext`` when the version read with the usage is not ``ctx``'s."""
    if ctx.version is not None and version is not None and int(version) != ctx.version:
        raise StaleContext([ctx.customer])


# ---------------------------------------------------------------- connections

class Connections:
    """Driver connections for the quota hot path (see the module docstring).

    ``write()`` yields a connection for one transaction (the caller sends ``BEGIN``);
    ``read()`` one for autocommit reads. A connection that raised a driver error is
    closed, never reused. ``pg`` tells the dialect, ``ph`` its parameter placeholder.
    """

    def __init__(self, engine: Engine, *, keep: int = 16, settings: tuple[str, ...] = ()):
        self.engine = engine
        self._settings = settings  # PostgreSQL: SET statements run on each new connection
        self.pg = engine.dialect.name == "postgresql"
        self.ph = "%s" if self.pg else "?"
        database = engine.url.database
        self._file = None if self.pg or database in (None, "", ":memory:") else database
        self._keep = keep
        self._free: list[Any] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        if self.pg:
            import psycopg

            self._errors: tuple[type[BaseException], ...] = (psycopg.Error,)
            self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        else:
            import sqlite3

            self._errors = (sqlite3.Error,)

    def _connect(self) -> Any:
        if self.pg:
            import psycopg

            conn = psycopg.connect(self._conninfo, autocommit=True)
            # generic plans: these connections only run the quota statements, key lookups whose
            # plan does not depend on the values; re-planning each execution (PostgreSQL's
            # default for statements with array parameters) cost more than running them. (A
            # SET, not a connection option: that would replace the URL's own options.)
            conn.execute("SET plan_cache_mode = force_generic_plan")
            for setting in self._settings:
                conn.execute(setting)
            conn.prepared_max = 1000  # batch statements vary with the batch's shape: keep them all prepared
            return conn
        import sqlite3

        conn = sqlite3.connect(self._file, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")  # as billing.store.db.make_engine (WAL)
        # and reads through its memory map: a check of a customer whose pages are not in this
        # connection's cache (checks spread over many customers) copies no page to read it
        conn.execute(f"PRAGMA mmap_size={SQLITE_MMAP}")
        return conn

    @contextmanager
    def write(self) -> Iterator[Any]:
        if self._file is None and not self.pg:  # in-memory SQLite: the engine's own connection
            raw = self.engine.raw_connection()
            try:
                yield raw.driver_connection
            finally:
                raw.close()
            return
        with self._lock:
            conn = self._free.pop() if self._free else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        except BillingError:  # a domain answer (unknown customer...): the connection is fine if idle
            if self._idle(conn):
                self._release(conn)
            else:
                self._discard(conn)
            raise
        except BaseException:
            self._discard(conn)
            raise
        self._release(conn)

    def _idle(self, conn: Any) -> bool:
        if self.pg:
            from psycopg.pq import TransactionStatus

            return not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
        return not conn.in_transaction

    def _release(self, conn: Any) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(conn)
                return
        conn.close()

    def local_reader(self) -> Any:
        """This thread's autocommit connection to a SQLite file (None elsewhere)."""
        if self._file is None:
            return None
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    @contextmanager
    def read(self) -> Iterator[Any]:
        if self._file is not None:  # SQLite file: this thread's own autocommit connection
            yield self.local_reader()
            return
        with self.write() as conn:
            yield conn

    def _discard(self, conn: Any) -> None:
        try:
            if self.pg:
                conn.close()
            elif self._file is not None:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                with self._lock:
                    if len(self._free) < self._keep:
                        self._free.append(conn)  # a SQLite connection survives a failed statement
        except Exception:  # noqa: BLE001 - closing a broken connection
            pass

    def pipeline(self, conn: Any):
        """One network round trip per sync on PostgreSQL; a no-op elsewhere."""
        return conn.pipeline() if self.pg else nullcontext()

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for conn in free:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


def run_all(conns: Connections, conn: Any, queries: Sequence[tuple[str, Sequence[Any]]], *,
            returns_rows: bool = True) -> list[list[tuple]]:
    """Execute ``queries`` (SQL with ``?`` placeholders, parameters) and return each one's
    rows; on PostgreSQL all of them in one pipeline (one round trip)."""
    ph = conns.ph
    if len(queries) == 1:  # one statement: a pipeline would only add work
        sql, params = queries[0]
        cur = conn.cursor()
        try:
            cur.execute(sql.replace("?", ph) if ph != "?" else sql, params)
            return [cur.fetchall()] if returns_rows else []
        finally:
            cur.close()
    if not conns.pg:  # in-process: nothing to pipeline, and each statement is finished before
        # the next (thousands of unfinished statements on one SQLite connection slow each new one)
        out = []
        cur = conn.cursor()
        try:
            for sql, params in queries:
                cur.execute(sql, params)
                out.append(cur.fetchall() if returns_rows else [])
        finally:
            cur.close()
        return out if returns_rows else []
    cursors = []
    with conns.pipeline(conn):
        for sql, params in queries:
            cur = conn.cursor()
            cur.execute(sql.replace("?", ph) if ph != "?" else sql, params)
            cursors.append(cur)
        out = [cur.fetchall() for cur in cursors] if returns_rows else []
    for cur in cursors:
        cur.close()
    return out


# -------------------------------------------------------------------- context

def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def load_context(conns: Connections, conn: Any, catalog: Catalog, customer: str, now: datetime) -> Context:
    """The customer's plan, period, seats, credits and dunning clock at ``now`` (one statement:
    ``context_sql.context_query``)."""
    found = load_contexts(conns, conn, catalog, [customer], now)[customer]
    if isinstance(found, BillingError):
        raise found
    return found


def load_contexts(conns: Connections, conn: Any, catalog: Catalog, customers: Sequence[str], now: datetime
                  ) -> dict[str, Context | BillingError]:
    """``load_context`` of several customers in one statement, whatever their number
    (``billing.reservations.context_sql``); a ``BillingError`` for a customer it would have
    raised for."""
    customers = list(dict.fromkeys(customers))
    sql, params = context_query(conns.pg, customers)
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        found = {row[0]: row for row in cur.fetchall()}
    finally:
        cur.close()
    out: dict[str, Context | BillingError] = {}
    for customer in customers:
        try:
            out[customer] = _context(catalog, customer, now, context_rows(found.get(customer)))
        except BillingError as exc:
            out[customer] = exc
    return out


# (plan interval, anchor, timezone, anchor instant) -> the period last found for that cycle:
# a cold context finds its period without building and validating a ``BillingCycle`` (every
# customer of a calendar-anchored plan in one timezone shares one entry)
_PERIODS: dict[tuple, Period] = {}
_PERIODS_MAX = 4096


def _period(interval: str, anchor: str, tz: str, anchor_at: datetime | None, now: datetime) -> Period:
    key = (interval, anchor, tz, anchor_at)
    hit = _PERIODS.get(key)
    if hit is not None and hit.start <= now < hit.end:
        return hit
    period = BillingCycle(interval, anchor, tz, anchor_at).period_containing(now)
    if len(_PERIODS) >= _PERIODS_MAX:
        _PERIODS.clear()
    _PERIODS[key] = period
    return period


def _context(catalog: Catalog, customer: str, now: datetime, rows: Sequence[list[tuple]]) -> Context:
    tz_rows, sub_rows, seat_rows, failed_rows, grant_rows, override_rows = rows
    if not tz_rows:
        raise BillingError(f"unknown customer {customer!r}", code=ErrorCode.CUSTOMER_NOT_FOUND)
    tz, own_guard, stamp = tz_rows[0][0], tz_rows[0][1], tz_rows[0][-1]
    budgets = budgets_of([r[:-1] for r in tz_rows]) if tz_rows[0][2] is not None else ()
    # every instant parsed once (``_next_change`` reads them again)
    subs = [(sid, plan_id, version, _utc(anchor_at), _utc(started_at), _utc(ended_at))
            for sid, plan_id, version, anchor_at, started_at, ended_at in sub_rows]
    active = [(started, sid, plan_id, version, anchor_at) for sid, plan_id, version, anchor_at, started, ended in subs
              if started <= now and (ended is None or ended > now)]
    if not active:
        raise BillingError(f"customer {customer!r} has no active subscription", code=ErrorCode.SUBSCRIPTION_NOT_FOUND)
    _, sid, plan_id, version, anchor_at = max(active, key=lambda a: (a[0], a[1]))
    plan = catalog.get(plan_id, version)
    if own_guard is not None:  # the customer's cost guardrails replace the plan's
        plan = with_cost_guard(plan, own_guard)
    billing = plan.billing
    period = _period(billing.interval, billing.anchor, tz, anchor_at if billing.anchor == "anniversary" else None, now)
    if override_rows:
        overrides = overrides_by_subscription([r for r in override_rows if r[0] == sid], _utc).get(sid)
        if overrides:  # the contract's plan for this period: the overrides in force at its start (as rating does)
            started = next(s[4] for s in subs if s[0] == sid)
            plan = effective_plan(plan, overrides, max(period.start, started))
    seat_changes = [(sub_id, _utc(at), seats, row_id) for sub_id, at, seats, row_id in seat_rows]
    changes = sorted((at, row_id, seats) for sub_id, at, seats, row_id in seat_changes if sub_id == sid)
    at_start, peak = None, 0
    for at, _, seats in changes:
        if at <= period.start:
            at_start = seats
        elif at < period.end and at <= now:
            peak = max(peak, seats)
    seats = max(peak, at_start if at_start is not None else (changes[0][2] if changes else 1))
    failed = min((_utc(r[0]) for r in failed_rows), default=None)
    credits = {}
    grants = [(gid, amount_micro, applies_to, _utc(effective_at), _utc(expires_at), burned)
              for gid, amount_micro, applies_to, effective_at, expires_at, burned in grant_rows]
    for gid, amount_micro, applies_to, eff, exp, burned in grants:
        if eff > now or (exp is not None and exp <= now):
            continue
        balance = int(amount_micro) - int(burned or 0)
        if balance > 0:
            credits[gid] = (Decimal(balance) / MICRO, tuple(applies_to.split(",")) if applies_to else None)
    return Context(customer, sid, plan, period, seats, credits, failed, tz, budgets,
                   None if stamp is None else int(stamp),
                   _next_change(now, period, subs, seat_changes, grants, override_rows),
                   next((s[4], s[5]) for s in subs if s[0] == sid))


def _next_change(now: datetime, period: Period, subs, seat_changes, grants, override_rows) -> datetime:
    """The first instant after ``now`` at which a row of the context changes what it says
    (``Context.valid_until``); ``subs``, ``seat_changes``, ``grants``: ``_context``'s rows with
    their instants parsed."""
    found = period.end
    instants = [*(x for r in subs for x in (r[4], r[5])), *(r[1] for r in seat_changes),
                *(x for r in grants for x in (r[3], r[4])),
                *(_utc(x) for r in override_rows for x in (r[3], r[4]))]
    for t in instants:
        if t is not None and now < t < found:
            found = t
    return found


# ---------------------------------------------------------------------- state

# committed usage of the period, live holds per meter, and rate-window counts: one snapshot.
# Numbers come as (high, low) pairs, exact past 2^63 on both databases: a counter's stored
# (carry, low) parts (``_SCALE['u']``: 10^18), sums of live holds' parts (``HELD``: 10^9).
_HELD_UNITS, _HELD_COST = held_sum_sql("units_micro"), held_sum_sql("cost_pico")
STATE_SQL = (
    "SELECT 'u', meter, units_carry, units_micro, cost_carry, cost_pico, events FROM usage_counter "
    "WHERE customer_id = ? AND period_start = ? AND meter <> '*' "  # (the period's all-events row)
    f"UNION ALL SELECT 'h', meter, {_HELD_UNITS}, {_HELD_COST}, COUNT(*) FROM quota_hold "
    "WHERE customer_id = ? AND status = 'held' AND expires_at > ? AND period_start = ? GROUP BY meter "
    "UNION ALL SELECT 'r', charge, 0, count, 0, 0, 0 FROM quota_rate_window "
    "WHERE customer_id = ? AND window_start <= ? AND window_end > ?")
# the same without rate windows (plans without rate limits)
STATE_SQL_NO_RATES = STATE_SQL[:STATE_SQL.index(" UNION ALL SELECT 'r'")]
# plans with cost guards read the period's all-events row too (its cost: the provider cost to date)
_ALL_ROWS = {sql: sql.replace(" AND meter <> '*'", "") for sql in (STATE_SQL, STATE_SQL_NO_RATES)}
# a task's committed usage ('a') and live holds ('h'): steps, tokens, cost as (high, low) pairs
_HELD_TASK = f"{held_sum_sql('steps')}, {held_sum_sql('tokens')}, {held_sum_sql('cost_pico')}"
TASK_SQL = (
    "SELECT 'a', 0, steps, tokens_carry, tokens, cost_carry, cost_pico FROM agent_task_usage "
    "WHERE customer_id = ? AND task_id = ? "
    f"UNION ALL SELECT 'h', {_HELD_TASK} FROM quota_hold "
    "WHERE customer_id = ? AND task = ? AND status = 'held' AND expires_at > ?")
_SCALE = {"u": WIDE, "a": WIDE, "h": HELD, "r": 0}  # what a row's high numbers count in

def has_rate_limits(plan: Plan) -> bool:
    return plan.compiled.has_rate_limits


# the customer's context_version, read in the same snapshot as its usage (kind ``STAMP``;
# 'v', 't', 'x' are ``quota_exact``'s)
STAMP = "s"
_VERSION_SQL = f" UNION ALL SELECT '{STAMP}', '', 0, context_version, 0, 0, 0 FROM customer WHERE id = ?"


def state_query(ctx: Context, now_us: int, pg: bool = False) -> tuple[str, tuple]:
    """``STATE_SQL`` for ``ctx`` (rows: see ``parse_state``), its ``context_version`` last."""
    sql, params = _state_query(ctx, now_us, pg)
    return sql + _VERSION_SQL, (*params, ctx.customer)


def _state_query(ctx: Context, now_us: int, pg: bool = False) -> tuple[str, tuple]:
    c, start_us = ctx.customer, to_us(ctx.period.start)
    compiled = ctx.plan.compiled
    if compiled.has_rate_limits:
        sql, params = STATE_SQL, (c, start_us, c, now_us, start_us, c, now_us, now_us)
    else:
        sql, params = STATE_SQL_NO_RATES, (c, start_us, c, now_us, start_us)
    if ctx.plan.cost_guard is not None or ctx.budgets:
        sql = _ALL_ROWS[sql]
    if compiled.event_read_meters:  # meters the counters cannot rate (quota_exact)
        more, extra = quota_exact.selects(pg, ctx.plan, start_us, to_us(ctx.period.end), with_customer=False,
                                          customer=c)
        return sql + more, (*params, *extra)
    return sql, params


def task_query(customer: str, task: str, now_us: int) -> tuple[str, tuple]:
    return TASK_SQL, (customer, task, customer, task, now_us)


def parse_state(rows: list[tuple]) -> tuple[dict[str, MeterUsage], dict[str, MeterUsage], dict[str, int]]:
    usage: dict[str, MeterUsage] = {}
    held: dict[str, MeterUsage] = {}
    rates: dict[str, int] = {}
    for kind, key, units_high, units, cost_high, cost, n in rows:
        if kind == STAMP:  # the context's version (``state_version``)
            continue
        if kind == "r":
            rates[key] = int(units)
        elif kind in ("u", "h"):
            (usage if kind == "u" else held)[key] = _meter_usage(kind, units_high, units, cost_high, cost, n)
        else:  # rows of the meters read from the events: make_state folds them in
            usage.setdefault(quota_exact.ROWS, []).append((kind, key, units, cost, n))  # type: ignore[attr-defined]
    return usage, held, rates


def state_version(rows: list[tuple]) -> int | None:
    """The ``context_version`` among ``state_query``'s rows (None: the customer is gone)."""
    for row in reversed(rows):
        if row[0] == STAMP:
            return int(row[3])
    return None


def _meter_usage(kind: str, units_high: Any, units: Any, cost_high: Any, cost: Any, n: Any) -> MeterUsage:
    """A counter row's ('u') or live holds' ('h') numbers, as (high, low) pairs, as usage."""
    if units_high or cost_high or kind == "h":  # (a counter's carries are 0 until it passes 10^18)
        scale = _SCALE[kind]
        units, cost = int(units_high or 0) * scale + int(units or 0), int(cost_high or 0) * scale + int(cost or 0)
    return frozen(MeterUsage, {"units": Decimal(units) / MICRO, "cost": Decimal(cost) / PICO, "events": int(n),
                               "transactions": None, "groups": ()})


def parse_batch_state(rows: list[tuple], customers: Sequence[str], versions: dict | None = None
                      ) -> dict[str, list[dict]]:
    """Rows of ``batch_state_query`` -> customer -> [usage, held, rate counts] (as
    ``parse_state``; the period's all-events counter row is kept under ``ALL_EVENTS``:
    ``make_state`` reads the provider cost to date from it). ``versions``: filled with each
    customer's ``context_version`` read in the same statement."""
    states: dict[str, list[dict]] = {c: [{}, {}, {}] for c in customers}
    for customer, kind, key, units_high, units, cost_high, cost, n in rows:
        usage, held, rates = states[customer]
        if kind == STAMP:
            if versions is not None:
                versions[customer] = int(units)
        elif kind == "r":
            rates[key] = int(units)
        elif kind == "h" or kind == "u":
            (usage if kind == "u" else held)[key] = _meter_usage(kind, units_high, units, cost_high, cost, n)
        elif kind not in ("u", "h"):  # rows of the meters read from the events: make_state folds them in
            usage.setdefault(quota_exact.ROWS, []).append((kind, key, units, cost, n))
    return states


def parse_batch_tasks(rows: list[tuple], pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], TaskUsage]:
    """Rows of ``batch_task_query`` -> (customer, task) -> its usage (as ``parse_task``)."""
    grouped: dict[tuple[str, str], list[tuple]] = {pair: [] for pair in pairs}
    for customer, task, *rest in rows:
        grouped[(customer, task)].append(rest)
    return {pair: parse_task(found) for pair, found in grouped.items()}


def parse_task(rows: list[tuple]) -> TaskUsage:
    """Rows of ``TASK_SQL`` (kind, then steps, tokens and cost as (high, low) pairs) -> the
    task's committed plus held usage."""
    steps = tokens = cost_pico = 0
    for kind, s1, s2, t1, t2, c1, c2 in rows:
        scale = _SCALE[kind]
        steps += int(s1 or 0) * scale + int(s2 or 0)
        tokens += int(t1 or 0) * scale + int(t2 or 0)
        cost_pico += int(c1 or 0) * scale + int(c2 or 0)
    return TaskUsage(steps, tokens, Decimal(cost_pico) / PICO)


def make_state(ctx: Context, now: datetime, usage, held, rates, task: TaskUsage | None,
               budget_rows: Sequence[Sequence[Any]] | None = None) -> UsageState:
    """The decision's state; with cost guards or budgets, ``provider_cost`` from the
    all-events row; with budgets, their usage (``budget_rows``: ``budget_sql.budget_query``'s)."""
    if ctx.plan.compiled.event_read_meters:
        usage = quota_exact.fold(ctx.plan, usage)
    everything = usage.get(ALL_EVENTS) if ctx.plan.cost_guard is not None or ctx.budgets else None
    return frozen(UsageState, {
        "now": now, "period_start": ctx.period.start, "period_end": ctx.period.end, "usage": usage, "held": held,
        "seats": ctx.seats, "credit_balance": _ZERO, "credit_balances": ctx.credits, "task": task,
        "rate_counts": rates, "payment_overdue": False, "payment_failed_at": ctx.payment_failed_at,
        "provider_cost": everything.cost if everything is not None else _ZERO,
        "budgets": budget_usage(ctx, now, usage, budget_rows) if ctx.budgets else ()})


def budget_rows_of(conns: Connections, conn: Any, ctx: Context, now: datetime, reader: BudgetReader | None = None,
                   first: tuple | None = None) -> list[tuple] | None:
    """The rows of the customer's event-read budgets (None: it has none) through ``reader``
    (a fresh one reads everything); ``first``: (token, rows) of a statement already run."""
    reader = reader or BudgetReader()
    if first is not None:
        rows = reader.rows(ctx, first[0], first[1])
        if rows is not None:
            reader.remember(ctx, now, rows)
            return rows
    for _ in range(3):
        q, token = reader.statement(conns.pg, ctx, now)
        if q is None:
            return None
        rows = reader.rows(ctx, token, run_all(conns, conn, [q])[0])
        if rows is not None:
            reader.remember(ctx, now, rows)
            return rows
    raise BillingError("budget usage kept changing while read; retry", code=ErrorCode.UNAVAILABLE)


def usage_state(conns: Connections, conn: Any, ctx: Context, now: datetime, task: str | None,
                reader: BudgetReader | None = None, budget_ttl: float = 0.0) -> UsageState:
    """Committed usage, live holds, rate windows (and the task's usage, the budgets') in one
    round trip (budgets: another when ``reader``'s events cannot be trusted; none when it
    read them less than ``budget_ttl`` seconds ago: a check's). ``StaleContext`` when the
    customer's context changed since ``ctx`` was loaded."""
    now_us = to_us(now)
    queries = [state_query(ctx, now_us, conns.pg)]
    if task is not None:
        queries.append(task_query(ctx.customer, task, now_us))
    reader = reader or BudgetReader()
    recent = reader.recent(ctx, now, budget_ttl) if ctx.budgets and budget_ttl > 0 else None
    budgets, token = reader.statement(conns.pg, ctx, now) if ctx.budgets and recent is None else (None, None)
    if budgets is not None:
        queries.append(budgets)
    results = run_all(conns, conn, queries)
    check_version(ctx, state_version(results[0]))
    usage, held, rates = parse_state(results[0])
    rows = budget_rows_of(conns, conn, ctx, now, reader, (token, results[-1])) if budgets is not None else recent
    return make_state(ctx, now, usage, held, rates, parse_task(results[1]) if task is not None else None, rows)


# ------------------------------------------------------- many customers at once
#
# One statement per kind of read whatever the number of customers. On PostgreSQL the rows
# travel as ONE JSON array parameter (encoded by orjson, unpacked by the server), so the
# statement text never changes: psycopg parses it once and the server keeps it prepared.
# SQLite gets a ``VALUES`` list (no parsing or encoding cost).

def keyed(pg: bool, name: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]
          ) -> tuple[str, list[Any]]:
    """``name (columns) AS (...)`` for a ``WITH`` clause holding ``rows``, and its parameters."""
    if pg:
        cols = ", ".join(f"(e->>{i})::{t} AS {c}" for i, (c, t) in enumerate(columns))
        return f"{name} AS (SELECT {cols} FROM jsonb_array_elements(%s::jsonb) AS e)", [json_rows(rows)]
    one = "(" + ",".join("?" * len(columns)) + ")"
    return (f"{name} ({', '.join(c for c, _ in columns)}) AS (VALUES {','.join([one] * len(rows))})",
            [v for row in rows for v in row])


def json_rows(rows: Sequence[Sequence[Any]]) -> str:
    return orjson.dumps(rows).decode()


def batch_state_query(pg: bool, ctxs: Sequence[Context], now_us: int) -> tuple[str, list[Any]]:
    """``STATE_SQL`` for several customers in one statement; rows start with the customer."""
    cte, params = keyed(pg, "c", (("customer_id", "varchar"), ("period_start", "bigint")),
                        [(c.customer, to_us(c.period.start)) for c in ctxs])
    if pg:
        sql = (f"WITH {cte} "
               "SELECT c.customer_id, 'u', u.meter, u.units_carry, u.units_micro, u.cost_carry, u.cost_pico, u.events "
               "FROM c CROSS JOIN LATERAL (SELECT meter, units_carry, units_micro, cost_carry, cost_pico, events "
               "FROM usage_counter WHERE customer_id = c.customer_id AND period_start = c.period_start) u "
               "UNION ALL SELECT c.customer_id, 'h', h.meter, h.u1, h.u2, h.c1, h.c2, h.n FROM c CROSS JOIN LATERAL "
               f"(SELECT meter, {_held_as('units_micro', 'u')}, {_held_as('cost_pico', 'c')}, COUNT(*) AS n "
               "FROM quota_hold WHERE customer_id = c.customer_id AND status = 'held' AND expires_at > %s "
               "AND period_start = c.period_start GROUP BY meter) h")
    else:
        sql = (f"WITH {cte} "
               "SELECT u.customer_id, 'u', u.meter, u.units_carry, u.units_micro, u.cost_carry, u.cost_pico, u.events "
               "FROM c JOIN usage_counter u ON u.customer_id = c.customer_id AND u.period_start = c.period_start "
               f"UNION ALL SELECT h.customer_id, 'h', h.meter, {held_sum_sql('h.units_micro')}, "
               f"{held_sum_sql('h.cost_pico')}, COUNT(*) FROM c "
               "JOIN quota_hold h ON h.customer_id = c.customer_id AND h.status = 'held' AND h.expires_at > ? "
               "AND h.period_start = c.period_start GROUP BY h.customer_id, h.meter")
    params.append(now_us)
    for c in ctxs:  # meters the counters cannot rate (quota_exact): per customer
        if c.plan.compiled.event_read_meters:
            more, extra = quota_exact.selects(pg, c.plan, to_us(c.period.start), to_us(c.period.end),
                                              with_customer=True, customer=c.customer)
            sql += more
            params += extra
    if any(has_rate_limits(c.plan) for c in ctxs):
        if pg:
            sql += (" UNION ALL SELECT c.customer_id, 'r', r.charge, 0, r.count, 0, 0, 0 FROM c CROSS JOIN LATERAL "
                    "(SELECT charge, count FROM quota_rate_window WHERE customer_id = c.customer_id "
                    "AND window_start <= %s AND window_end > %s) r")
        else:
            sql += (" UNION ALL SELECT r.customer_id, 'r', r.charge, 0, r.count, 0, 0, 0 FROM c "
                    "JOIN quota_rate_window r ON r.customer_id = c.customer_id AND r.window_start <= ? "
                    "AND r.window_end > ?")
        params += [now_us, now_us]
    if pg:
        sql += (f" UNION ALL SELECT c.customer_id, '{STAMP}', '', 0, cu.context_version, 0, 0, 0 FROM c "
                "JOIN customer cu ON cu.id = c.customer_id")
    else:
        sql += (f" UNION ALL SELECT cu.id, '{STAMP}', '', 0, cu.context_version, 0, 0, 0 FROM c "
                "JOIN customer cu ON cu.id = c.customer_id")
    return sql, params


def stale_of(ctxs, versions: dict) -> list[str]:
    """The customers whose ``context_version`` read (``versions``) is not their context's."""
    return sorted(c.customer for c in ctxs if c.version is not None and c.customer in versions
                  and versions[c.customer] != c.version)


def batch_task_query(pg: bool, pairs: Sequence[tuple[str, str]], now_us: int) -> tuple[str, list[Any]]:
    """``TASK_SQL`` for several (customer, task) pairs; rows start with the pair."""
    cte, params = keyed(pg, "t", (("customer_id", "varchar"), ("task_id", "varchar")), pairs)
    if pg:
        sql = (f"WITH {cte} "
               "SELECT t.customer_id, t.task_id, 'a', 0, a.steps, a.tokens_carry, a.tokens, a.cost_carry, a.cost_pico "
               "FROM t CROSS JOIN LATERAL (SELECT steps, tokens_carry, tokens, cost_carry, cost_pico "
               "FROM agent_task_usage WHERE customer_id = t.customer_id AND task_id = t.task_id) a "
               "UNION ALL SELECT t.customer_id, t.task_id, 'h', h.s1, h.s2, h.t1, h.t2, h.c1, h.c2 FROM t "
               f"CROSS JOIN LATERAL (SELECT {_held_as('steps', 's')}, {_held_as('tokens', 't')}, "
               f"{_held_as('cost_pico', 'c')} FROM quota_hold "
               "WHERE customer_id = t.customer_id AND status = 'held' AND expires_at > %s AND task = t.task_id) h")
    else:
        sql = (f"WITH {cte} "
               "SELECT a.customer_id, a.task_id, 'a', 0, a.steps, a.tokens_carry, a.tokens, a.cost_carry, a.cost_pico "
               "FROM t JOIN agent_task_usage a ON a.customer_id = t.customer_id AND a.task_id = t.task_id "
               f"UNION ALL SELECT h.customer_id, h.task, 'h', {held_sum_sql('h.steps')}, {held_sum_sql('h.tokens')}, "
               f"{held_sum_sql('h.cost_pico')} FROM t "
               "JOIN quota_hold h ON h.customer_id = t.customer_id AND h.task = t.task_id "
               "AND h.status = 'held' AND h.expires_at > ? GROUP BY h.customer_id, h.task")
    params.append(now_us)
    return sql, params


def batch_request_query(pg: bool, pairs: Sequence[tuple[str, str]]) -> tuple[str, list[Any]]:
    """Holds already made for (customer, request id) pairs (the unique key: index lookups)."""
    cte, params = keyed(pg, "r", (("customer_id", "varchar"), ("request_id", "varchar")), pairs)
    join = ("CROSS JOIN LATERAL (SELECT * FROM quota_hold WHERE customer_id = r.customer_id "
            "AND request_id = r.request_id) h" if pg else
            "JOIN quota_hold h ON h.customer_id = r.customer_id AND h.request_id = r.request_id")
    return (f"WITH {cte} SELECT h.customer_id, h.request_id, h.id, h.status, h.expires_at, h.decision "
            f"FROM r {join}"), params


def batch_counters_query(pg: bool, pairs: Sequence[tuple[str, int]]) -> tuple[str, list[Any]]:
    """Committed usage of several (customer, period start) pairs: customer, meter, units
    micro, cost pico (exact ints, joined from their stored parts) and events, per row of
    ``counter_values``."""
    cte, params = keyed(pg, "c", (("customer_id", "varchar"), ("period_start", "bigint")), pairs)
    join = ("CROSS JOIN LATERAL (SELECT * FROM usage_counter WHERE customer_id = c.customer_id "
            "AND period_start = c.period_start) u" if pg else
            "JOIN usage_counter u ON u.customer_id = c.customer_id AND u.period_start = c.period_start")
    return (f"WITH {cte} SELECT u.customer_id, u.meter, u.units_carry, u.units_micro, u.cost_carry, u.cost_pico, "
            f"u.events FROM c {join}"), params


def counter_values(rows: Sequence[tuple]) -> list[tuple[str, str, int, int, int]]:
    """Rows of ``batch_counters_query`` as (customer, meter, units micro, cost pico, events)."""
    return [(c, m, join(uc, u), join(cc, cost), int(n)) for c, m, uc, u, cc, cost, n in rows]


def _held_as(column: str, name: str) -> str:
    """``held_sum_sql`` of a column, its two sums named ``<name>1`` and ``<name>2``."""
    high, low = held_sums(column)
    return f"{high} AS {name}1, {low} AS {name}2"


def id_list(pg: bool, column: str, ids: Sequence[str]) -> tuple[str, list[Any]]:
    """``column IN (...)`` for ``ids`` (``= ANY(array)`` on PostgreSQL)."""
    if pg:
        return f"{column} = ANY(%b::varchar[])", [list(ids)]
    return f"{column} IN ({','.join('?' * len(ids))})", list(ids)


def holds_query(pg: bool, ids: Sequence[str]) -> tuple[str, list[Any]]:
    """Holds by id with their customer's timezone and subscriptions (one row per pair), then
    the hold's expiry, settlement, meter and units, and the event a committed hold was
    settled with (type, ts, properties), and the budgets it holds a part in. On PostgreSQL the holds are locked (``FOR UPDATE``)
    until the transaction ends, in id order (two batches never wait on each other's holds in
    a cycle): two commits of one hold settle one after the other, the second seeing the
    first's event."""
    where, params = id_list(pg, "h.id", ids)
    return ("SELECT h.id, h.customer_id, h.status, h.event_type, h.model, h.task, h.event_id, c.timezone, "
            "s.id, s.plan_id, s.plan_version, s.anchor_at, s.started_at, s.ended_at, "
            "h.expires_at, h.settled_at, h.meter, h.units_micro, e.type, e.ts, e.properties, h.budgets FROM quota_hold h "
            "LEFT JOIN customer c ON c.id = h.customer_id LEFT JOIN subscription s ON s.customer_id = h.customer_id "
            "LEFT JOIN usage_event e ON e.customer_id = h.customer_id AND e.event_id = h.event_id "
            f"WHERE {where}" + (' ORDER BY h.id COLLATE "C" FOR UPDATE OF h' if pg else "")), params


HOLD_COLUMNS = (("id", "varchar"), ("customer_id", "varchar"), ("request_id", "varchar"), ("key", "varchar"),
                ("meter", "varchar"), ("event_type", "varchar"), ("period_start", "bigint"),
                ("units_micro", "bigint"), ("cost_pico", "bigint"), ("tokens", "bigint"), ("steps", "integer"),
                ("task", "varchar"), ("model", "varchar"), ("tier", "varchar"), ("outcome", "varchar"),
                ("reason", "varchar"), ("decision", "text"), ("status", "varchar"), ("created_at", "bigint"),
                ("expires_at", "bigint"), ("budgets", "text"))


def insert_holds(pg: bool, rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    cols = ", ".join(c for c, _ in HOLD_COLUMNS)
    if pg:
        cte, params = keyed(pg, "v", HOLD_COLUMNS, rows)
        return f"WITH {cte} INSERT INTO quota_hold ({cols}) SELECT {cols} FROM v", params
    one = "(" + ",".join("?" * len(HOLD_COLUMNS)) + ")"
    return f"INSERT INTO quota_hold ({cols}) VALUES {','.join([one] * len(rows))}", [v for r in rows for v in r]
