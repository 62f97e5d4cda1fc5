"""Rebuild running counters from the stored events, so they stay what ingestion would have
made of the events under the subscriptions as they are now.

Ingestion counts an event under the subscriptions that cover it when it arrives. A
subscription that starts in the past (events already stored) or ends in the past (events
already counted after its end) changes that: ``recount_customer`` rebuilds the customer's
counters from the change on, in the transaction that makes the change. ``recount_all``
rebuilds every counter and all agent task usage (``billing db recount``; databases loaded
behind the ledger's back). A change between plans whose ``agent_limits.task_property``
differ (or to or from no plan: ``task``) also moves the agent task usage of the events it
moves: ``recount_customer`` is given the subscriptions as they were before the change.

Both use ``CounterPlanner``, the code ingestion uses, so a rebuilt counter equals an
ingested one. On PostgreSQL they lock ``usage_event`` (SHARE ROW EXCLUSIVE): ingestion in
flight finishes first (and is rebuilt over), later ingestion waits for the commit and then
reads the new subscriptions (it reads them after its INSERT); a close's snapshot waits too.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import orjson
from sqlalchemy import Connection, select

from billing.catalog import Catalog
from billing.events import tokens_of
from billing.ledger.rollups import RollupPlanner
from billing.store import rollup_sql
from billing.ledger.counters import DEFAULT_TASK_PROPERTY, CounterPlanner, SubscriptionView, subscription_views
from billing.store.event_store import upsert_counters, upsert_tasks
from billing.store.partitions import horizon_us
from billing.store.models import Customer, Subscription
from billing.store.types import from_us, to_us

STALE_FLAG = "counters_stale"
_PAGE = 20_000


def lock_for_recount(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE usage_event IN SHARE ROW EXCLUSIVE MODE")
    # SQLite: the transaction already holds the write lock (BEGIN IMMEDIATE)


def _ph(conn: Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"


def _views(conn: Connection, catalog: Catalog, customer_id: str | None) -> list[SubscriptionView]:
    s, c = Subscription.__table__.c, Customer.__table__.c
    query = select(s.id, s.customer_id, s.plan_id, s.plan_version, s.anchor_at, s.started_at, s.ended_at,
                   c.timezone).join(Customer.__table__, c.id == s.customer_id)
    if customer_id is not None:
        query = query.where(s.customer_id == customer_id)
    rows = conn.execute(query).all()
    return subscription_views([tuple(r[:7]) for r in rows], {r[1]: r[7] for r in rows}, catalog)


def _events(conn: Connection, customer_id: str | None, from_ts: int | None, model: bool = False) -> Iterator[tuple]:
    """(customer, type, ts, properties dict, cost_pico) of the stored events, in id order, a
    page at a time (``model``: with the model after the cost)."""
    ph = _ph(conn)
    clauses, params = [f"id > {ph}"], []
    if customer_id is not None:
        clauses.append(f"customer_id = {ph}")
        params.append(customer_id)
    if from_ts is not None:
        clauses.append(f"ts >= {ph}")
        params.append(from_ts)
    sql = (f"SELECT id, customer_id, type, ts, properties, cost_pico{', model' if model else ''} FROM usage_event "
           f"WHERE {' AND '.join(clauses)} ORDER BY id LIMIT {_PAGE}")
    last = 0
    cursor = conn.connection.driver_connection.cursor()
    try:
        while True:
            cursor.execute(sql, [last, *params])
            page = cursor.fetchall()
            for row in page:
                props = row[4]
                out = (row[1], row[2], int(row[3]), orjson.loads(props) if isinstance(props, (str, bytes)) else props,
                       int(row[5]))
                yield (*out, row[6]) if model else out
            if len(page) < _PAGE:
                return
            last = page[-1][0]
    finally:
        cursor.close()


def _count(conn: Connection, views: list[SubscriptionView], customer_id: str | None, from_ts: int | None, *,
           tasks: bool = False, before: list[SubscriptionView] | None = None, periods_from: int | None = None) -> None:
    """Add the counters (and with ``tasks`` the agent task usage) of the events from
    ``from_ts`` on. ``before``: the subscriptions the events were counted under; each event
    whose task they name otherwise is moved to the task ``views`` name."""
    planner = CounterPlanner(views)
    add = planner.add
    add_task = planner.add_task if tasks else None
    old = CounterPlanner(before) if before is not None else None
    if old is not None and set(old.task_properties) | set(planner.task_properties) == {DEFAULT_TASK_PROPERTY}:
        old = None  # every plan involved names its tasks by `task`: nothing moves
    moves: dict[tuple[str, str], list[int]] = {}
    enabled = gc.isenabled()
    gc.disable()  # millions of short-lived objects: collect once at the end (as ingestion does)
    try:
        for customer, etype, ts, props, cost in _events(conn, customer_id, from_ts):
            add(customer, etype, ts, props, cost)
            if add_task is not None:
                add_task(customer, ts, props, cost)
            if old is not None:
                _move_task(moves, customer, old.task_of(customer, ts, props), planner.task_of(customer, ts, props),
                           props, cost)
    finally:
        if enabled:
            gc.enable()
    deltas = planner.deltas
    if periods_from is not None:  # (a period begun before the archive horizon keeps its counters)
        deltas = {k: v for k, v in deltas.items() if k[2] >= periods_from}
    upsert_counters(conn, deltas)
    if add_task is not None:
        upsert_tasks(conn, planner.tasks, to_us(datetime.now(UTC)))
    if moves:
        upsert_tasks(conn, moves, to_us(datetime.now(UTC)))
        ph = _ph(conn)  # a task all of whose steps moved away is no task any more (as in a recount)
        conn.exec_driver_sql(f"DELETE FROM agent_task_usage WHERE customer_id = {ph} AND steps = 0", (customer_id,))


def _move_task(moves: dict[tuple[str, str], list[int]], customer: str, was: str | None, now: str | None,
               props: dict, cost: int) -> None:
    """One event's step, tokens and cost taken from task ``was`` and given to task ``now``."""
    if was == now:
        return
    tokens = tokens_of(props)
    for task, sign in ((was, -1), (now, 1)):
        if task is not None:
            slot = moves.setdefault((customer, task), [0, 0, 0])
            slot[0] += sign
            slot[1] += sign * tokens
            slot[2] += sign * cost


def customer_views(conn: Connection, catalog: Catalog, customer_id: str) -> list[SubscriptionView]:
    """The customer's subscriptions as counting sees them (read before a change, for
    ``recount_customer``'s ``before``)."""
    return _views(conn, catalog, customer_id)


def recount_customer(conn: Connection, catalog: Catalog, customer_id: str, from_ts: int,
                     before: list[SubscriptionView] | None = None) -> None:
    """Rebuild the customer's counters of every period that ends after ``from_ts`` (microseconds),
    and move the agent task usage of the events whose task the change renames (``before``:
    ``customer_views`` read before the change; None leaves task usage as it is).

    Call it in the transaction that changed the customer's subscriptions, after the change
    and after ``lock_for_recount``."""
    views = _views(conn, catalog, customer_id)
    ph = _ph(conn)
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(f"SELECT period_start, period_end FROM usage_counter WHERE customer_id = {ph}", [customer_id])
        rows = [(int(s), int(e)) for s, e in cursor.fetchall()]
        # widen to whole periods: every counter that reaches past `lo`, every period a
        # subscription counts into from `lo` on, starts at `lo` or later
        lo = from_ts
        while True:
            new = min([lo, *(s for s, e in rows if e > lo)])
            for view in views:
                first = max(new, view.start_us)
                if view.end_us is None or first < view.end_us:
                    new = min(new, to_us(view.cycle().period_containing(from_us(first)).start))
            if new == lo:
                break
            lo = new
        # after an archive, the periods begun before its end keep their counters (their events are gone)
        horizon = horizon_us(conn)
        keep = "" if horizon is None else f" AND period_start >= {int(horizon)}"
        cursor.execute(f"DELETE FROM usage_counter WHERE customer_id = {ph} AND period_end > {ph}{keep}",
                       [customer_id, lo])
    finally:
        cursor.close()
    _count(conn, views, customer_id, lo if horizon is None else max(lo, horizon), before=before,
           periods_from=horizon)


def recount_all(conn: Connection, catalog: Catalog, dimensions: Sequence[str] | None = None) -> None:
    """Rebuild every counter, all agent task usage and the hourly rollups from the stored
    events (clears the ``counters_stale`` and ``rollups_stale`` flags). ``dimensions``: the
    properties the rollups keep per value from now on (None: the ones they keep). After
    ``billing events archive`` (events before the horizon are gone), only the counters of
    periods that start at or after the horizon are rebuilt (from the events from there on);
    the others, and agent task usage, stay as they are."""
    lock_for_recount(conn)
    horizon = horizon_us(conn)
    if horizon is None:
        conn.exec_driver_sql("DELETE FROM usage_counter")
        conn.exec_driver_sql("DELETE FROM agent_task_usage")
        _count(conn, _views(conn, catalog, None), None, None, tasks=True)
    else:
        conn.exec_driver_sql(f"DELETE FROM usage_counter WHERE period_start >= {int(horizon)}")
        _count(conn, _views(conn, catalog, None), None, horizon, periods_from=horizon)
    conn.exec_driver_sql(f"DELETE FROM ledger_state WHERE name = '{STALE_FLAG}'")
    rebuild_rollups(conn, dimensions, horizon)


def rebuild_rollups(conn: Connection, dimensions: Sequence[str] | None = None, horizon: int | None = None) -> None:
    """``usage_rollup`` from the stored events (call after ``lock_for_recount``), added a
    few pages at a time (the deltas of a page add to the rows the last ones wrote). With an
    archive ``horizon`` (a month's start, µs), the rollups of the archived hours before it are
    kept as they are (their events are gone) and only the later ones are rebuilt."""
    if dimensions is not None:
        rollup_sql.set_dimensions(conn, dimensions)
    if horizon is None:
        rollup_sql.clear(conn)
    else:
        rollup_sql.clear(conn, from_hour=horizon)
    planner = RollupPlanner(rollup_sql.dimensions(conn))
    add = planner.add
    enabled = gc.isenabled()
    gc.disable()
    try:
        for n, (customer, etype, ts, props, cost, model) in enumerate(_events(conn, None, horizon, model=True), 1):
            add(customer, etype, ts, model, props, cost)
            if n % (10 * _PAGE) == 0:
                rollup_sql.upsert_rollups(conn, planner.deltas)
                planner.deltas = {}
    finally:
        if enabled:
            gc.enable()
    rollup_sql.upsert_rollups(conn, planner.deltas)


def counters_stale(conn: Connection) -> bool:
    return rollup_sql.flag_set(conn, STALE_FLAG)
