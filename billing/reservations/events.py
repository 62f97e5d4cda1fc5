"""Recording the events of quota commits inside a quota transaction (the lean single-event
path next to ``Ledger.record``'s bulk path, with the same rules).

Each commit's event is validated and costed by ``billing.ledger.prepare.prepare`` (as
``Ledger.record`` does), its counter increments are planned by
``billing.ledger.counters.CounterPlanner``, and the database's unique key
``(customer_id, event_id)`` decides whether it is new: only an event this transaction
inserted bumps the counters, adds to the hourly rollups (``billing.reservations.commit_rollups``),
settles its hold, counts for its agent task and, when its hold had expired, is logged as a
late commit (``quota_late_commit``).

On PostgreSQL everything is ONE statement of constant text (data-modifying CTEs hanging
off the ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` of the events, rows passed as
one JSON parameter per CTE), so it is prepared once and pipelined with the ``COMMIT``.
PostgreSQL runs the data-modifying CTEs of a statement in an order of its own choosing (in
practice the last one first), so each CTE waits for the one before it by reading its
``RETURNING`` rows (``_after``): the row locks are taken in the global order of
``billing.store.event_store`` (events, sum counters, max counters, hourly rollups, then holds
and agent task usage), never task usage before counters (which deadlocked with ingestion chunks). On SQLite (in-process: no round trips) it is a few
plain statements. Events that were not inserted are then sorted out by ``not_inserted``:
the stored event matches what the commit gave -> ``duplicate`` (the hold is settled), else
``conflict``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from billing.ledger.counters import CounterPlanner
from billing.reservations import commit_rollups
from billing.store import rollup_sql
from billing.store.event_store import CODE_POINT_ORDER
from billing.reservations.sql import json_rows
from billing.events import tokens_of
from billing.reservations.types import OPEN_HOLD
from billing.store.totals_sql import (
    COUNTER_COLUMNS, TASK_COLUMNS, TASK_UPDATE, counter_row, counter_update, counter_upsert, task_row, task_upsert)
from billing.store.wide import WIDE

_EVENT_COLUMNS = "customer_id, event_id, type, ts, properties, model, cost_pico, unpriced, unmetered"
_WIDE = f"{WIDE}::numeric"


def contributions(planner: CounterPlanner, commits: list) -> list[tuple]:
    """Per event, the counters it increments if it is new:
    (customer, event id, meter, period start, period end, units micro, is max, cost pico)."""
    out = []
    for _op, p, _hold in commits:
        planner.deltas = {}  # one event at a time (the planner keeps its period cache)
        planner.add(p.customer, p.type, p.ts, p.properties, p.cost_pico)
        for (customer, meter, start), (end, units, _events, cost, is_max) in planner.deltas.items():
            out.append((customer, p.event_id, meter, start, end, units, is_max, cost))
    planner.deltas = {}
    return out


def _stored(p) -> tuple:
    """A prepared event's ``usage_event`` columns (``_EVENT_COLUMNS``)."""
    return (*p[:7], p.unpriced, p.unmetered)


def task_rows(planner: CounterPlanner, commits: list) -> list[tuple]:
    """(customer, event id, task, tokens, cost pico) of the commits' events that count toward
    an agent task, by the rule ingestion uses (``CounterPlanner.task_of``: the event's task
    property, which the commit defaults to the hold's task)."""
    out = []
    for _op, p, _hold in commits:
        task = planner.task_of(p.customer, p.ts, p.properties)
        if task is not None:
            out.append((p.customer, p.event_id, task, tokens_of(p.properties), p.cost_pico))
    return out


_EVENT_TYPES = (("customer_id", "varchar"), ("event_id", "varchar"), ("type", "varchar"), ("ts", "bigint"),
                ("properties", "json"), ("model", "varchar"), ("cost_pico", "bigint"), ("unpriced", "varchar"),
                ("unmetered", "varchar"))
# units and cost travel as numeric text: exact at any size (a weighted meter's units may pass 2^63)
_CONTRIB_TYPES = (("customer_id", "varchar"), ("event_id", "varchar"), ("meter", "varchar"), ("period_start", "bigint"),
                  ("period_end", "bigint"), ("units", "numeric"), ("cost", "numeric"))


def _rows_cte(name: str, columns: tuple[tuple[str, str], ...]) -> str:
    cols = ", ".join(f"(e->>{i})::{t} AS {c}" for i, (c, t) in enumerate(columns))
    return f"{name} AS (SELECT {cols} FROM jsonb_array_elements(%s::jsonb) AS e)"


def _parts(value: str) -> str:
    """A non-negative numeric total as the (low, carry) BIGINT parts it is stored in."""
    return f"mod({value}, {_WIDE})::bigint, div({value}, {_WIDE})::bigint"


def _after(cte: str) -> str:
    """A condition that is always true but can only be evaluated once every row of the
    data-modifying CTE ``cte`` was written (its one-time filter reads the RETURNING rows
    first): the statement's row locks follow the order the CTEs are chained in."""
    return f"(SELECT COUNT(*) FROM {cte}) >= 0"


def _counter_cte(name: str, is_max: bool, after: str | None = None) -> str:
    """Counter upserts of the inserted events' contributions, in key order; ``after``: a
    counter CTE (with ``RETURNING``) whose writes this one's wait for: PostgreSQL runs a
    statement's data-modifying CTEs in no promised order, and every writer must take the
    counters' row locks in ingestion's order (sums, then maxima: never a deadlock)."""
    units = "MAX(d.units)" if is_max else "SUM(d.units)"
    wait = f" WHERE {_after(after)}" if after else ""
    return (_rows_cte(f"{name}d", _CONTRIB_TYPES) + f", {name}g AS (SELECT d.customer_id, d.meter, d.period_start, "
            f"MAX(d.period_end) AS period_end, {units} AS u, COUNT(*) AS n, SUM(d.cost) AS c FROM {name}d d "
            "JOIN ins USING (customer_id, event_id) GROUP BY d.customer_id, d.meter, d.period_start), "
            f"{name} AS (INSERT INTO usage_counter ({COUNTER_COLUMNS}) SELECT customer_id, meter, period_start, "
            f"period_end, {_parts('u')}, n, {_parts('c')} FROM {name}g{wait} "
            'ORDER BY customer_id COLLATE "C", meter COLLATE "C", period_start '  # Python's order, as ingestion
            f"ON CONFLICT (customer_id, meter, period_start) DO UPDATE SET {counter_update(is_max)} RETURNING 1)")


# one statement text for every batch (each CTE's rows are one JSON parameter, possibly
# empty): psycopg and the server prepare it once
_WRITE_PG = (
    "WITH " + _rows_cte("ev", _EVENT_TYPES) + ", "
    # usage_event is partitioned: the idempotency key is claimed in usage_event_key (billing.store.partitions)
    f"ky AS (INSERT INTO usage_event_key (customer_id, event_id, ts) SELECT customer_id, event_id, ts FROM ev "
    f"ORDER BY {CODE_POINT_ORDER} ON CONFLICT DO NOTHING RETURNING customer_id, event_id), "
    f"ins AS (INSERT INTO usage_event ({_EVENT_COLUMNS}) SELECT ev.* FROM ev JOIN ky USING (customer_id, event_id) "
    f"ORDER BY {CODE_POINT_ORDER} RETURNING customer_id, event_id, id), "
    + _counter_cte("cs", False) + ", " + _counter_cte("cm", True, after="cs") + ", "
    + rollup_sql.inserted_upsert_cte("ins", _after("cm")) + ", "  # the hourly rollups (ru), after the counters
    + _rows_cte("sv", (("hold_id", "varchar"), ("customer_id", "varchar"), ("event_id", "varchar"))) + ", "
    "st AS (UPDATE quota_hold h SET status = 'committed', event_id = sv.event_id, settled_at = %s "
    "FROM sv JOIN ins USING (customer_id, event_id) WHERE h.id = sv.hold_id AND h.status IN ('held', 'expired') "
    f"AND {_after('ru')} RETURNING 1), "
    + _rows_cte("tv", (("customer_id", "varchar"), ("event_id", "varchar"), ("task_id", "varchar"),
                       ("tokens", "numeric"), ("cost", "numeric"))) + ", "
    "tg AS (SELECT t.customer_id, t.task_id, COUNT(*) AS n, SUM(t.tokens) AS k, SUM(t.cost) AS c FROM tv t "
    "JOIN ins USING (customer_id, event_id) GROUP BY 1, 2), "
    f"tk AS (INSERT INTO agent_task_usage ({TASK_COLUMNS}) SELECT customer_id, task_id, n, {_parts('k')}, "
    f"{_parts('c')}, %s FROM tg WHERE {_after('st')} ORDER BY customer_id COLLATE \"C\", task_id COLLATE \"C\" "
    f"ON CONFLICT (customer_id, task_id) DO UPDATE SET {TASK_UPDATE} RETURNING 1), "
    + _rows_cte("lv", (("hold_id", "varchar"), ("customer_id", "varchar"), ("event_id", "varchar"),
                       ("meter", "varchar"), ("units", "bigint"), ("expired_at", "bigint"))) + ", "
    "lt AS (INSERT INTO quota_late_commit (hold_id, customer_id, meter, event_id, units_micro, expired_at, "
    "committed_at) SELECT l.hold_id, l.customer_id, l.meter, l.event_id, l.units, l.expired_at, %s FROM lv l "
    f"JOIN ins USING (customer_id, event_id) WHERE {_after('tk')} ORDER BY l.hold_id COLLATE \"C\" "
    "ON CONFLICT (hold_id, customer_id) DO NOTHING) "
    "SELECT customer_id, event_id, id FROM ins")


def _late_rows(commits: list, now_us: int) -> list[tuple]:
    """(hold id, customer, event id, meter, units micro, expired at) of commits whose hold
    had expired, in hold id order."""
    return sorted((hold.id, p.customer, p.event_id, hold.meter, hold.units_micro, hold.expires_at)
                  for _op, p, hold in commits if hold.status in OPEN_HOLD and hold.late_at(now_us))


def write_pg(execute: Callable, commits: list, contrib: list[tuple], tasks: list[tuple], now_us: int,
             dims: tuple[str, ...]) -> Any:
    """One statement: insert the events; for those inserted, bump counters, add to the
    hourly rollups (``dims``: their dimensions), settle holds, add task usage, log late
    commits. Returns the cursor of the inserted (customer, event id, row id)."""
    events = [_stored(p) for _op, p, _hold in commits]
    sums = sorted((c[0], c[1], c[2], c[3], c[4], str(c[5]), str(c[7])) for c in contrib if not c[6])
    maxes = sorted((c[0], c[1], c[2], c[3], c[4], str(c[5]), str(c[7])) for c in contrib if c[6])
    settle = sorted((hold.id, p.customer, p.event_id) for _op, p, hold in commits if hold.status in OPEN_HOLD)
    rollups = commit_rollups.pg_rows(dims, [p for _op, p, _hold in commits])
    return execute(_WRITE_PG, [json_rows(events), json_rows(sums), json_rows(maxes), rollups, json_rows(settle), now_us,
                               json_rows(sorted((c, e, t, str(k), str(p)) for c, e, t, k, p in tasks)), now_us,
                               json_rows(_late_rows(commits, now_us)), now_us])


def write_sqlite(execute: Callable, commits: list, contrib: list[tuple], tasks: list[tuple],
                 now_us: int, dims: tuple[str, ...]) -> dict[tuple[str, str], int]:
    """The same as ``write_pg`` in plain statements; returns the inserted keys with their row ids."""
    events = sorted((p for _op, p, _hold in commits), key=lambda p: (p.customer, p.event_id))
    marks = ",".join(["(?,?,?,?,?,?,?,?,?)"] * len(events))
    cur = execute(f"INSERT INTO usage_event ({_EVENT_COLUMNS}) VALUES {marks} "
                  "ON CONFLICT (customer_id, event_id) DO NOTHING RETURNING customer_id, event_id, id",
                  [v for p in events for v in _stored(p)])
    inserted = {(c, e): int(i) for c, e, i in cur.fetchall()}
    deltas: dict[tuple[str, str, int], list] = {}
    for customer, event_id, meter, start, end, units, is_max, cost in contrib:
        if (customer, event_id) not in inserted:
            continue
        slot = deltas.get((customer, meter, start))
        if slot is None:
            deltas[(customer, meter, start)] = [end, units, 1, cost, is_max]
        else:
            slot[1] = max(slot[1], units) if is_max else slot[1] + units
            slot[2] += 1
            slot[3] += cost
    for (customer, meter, start), (end, units, n, cost, is_max) in sorted(deltas.items()):
        execute(counter_upsert("?", is_max), counter_row(customer, meter, start, end, units, n, cost))
    commit_rollups.write_sqlite(execute, cur.connection, dims,
                                [p for p in events if (p.customer, p.event_id) in inserted])
    for _op, p, hold in sorted(commits, key=lambda c: c[2].id):
        if hold.status in OPEN_HOLD and (p.customer, p.event_id) in inserted:
            execute(_SETTLE, (p.event_id, now_us, hold.id))
    for hold_id, customer, event_id, meter, units, expired_at in _late_rows(commits, now_us):
        if (customer, event_id) in inserted:
            execute(_LATE, (hold_id, customer, meter, event_id, units, expired_at, now_us))
    per_task: dict[tuple[str, str], list[int]] = {}
    for customer, event_id, task, tokens, cost in tasks:
        if (customer, event_id) in inserted:
            slot = per_task.setdefault((customer, task), [0, 0, 0])
            slot[0] += 1
            slot[1] += tokens
            slot[2] += cost
    for (customer, task), (steps, tokens, cost) in sorted(per_task.items()):
        execute(task_upsert("?"), task_row(customer, task, steps, tokens, cost, now_us))
    return inserted


_SETTLE = "UPDATE quota_hold SET status = 'committed', event_id = ?, settled_at = ? WHERE id = ? " \
          "AND status IN ('held', 'expired')"
_LATE = ("INSERT INTO quota_late_commit (hold_id, customer_id, meter, event_id, units_micro, expired_at, committed_at) "
         "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (hold_id, customer_id) DO NOTHING")
# after _SETTLE outside the batch: logged only if that settlement was this commit's
_LATE_IF_SETTLED = ("INSERT INTO quota_late_commit (hold_id, customer_id, meter, event_id, units_micro, expired_at, "
                    "committed_at) SELECT id, customer_id, meter, event_id, units_micro, expires_at, settled_at "
                    "FROM quota_hold WHERE id = ? AND status = 'committed' AND event_id = ? AND settled_at = ? "
                    "AND expires_at <= settled_at ON CONFLICT (hold_id, customer_id) DO NOTHING")


def not_inserted(run_all: Callable, commits: list, now_us: int,
                 same: Callable[[Any, Any, tuple], bool]) -> list[tuple[Any, Any, Any, str]]:
    """After the commit, for events that were not inserted (their id was taken): ``duplicate``
    when ``same(op, hold, (event id, type, ts, properties))`` says the stored event is the
    commit's (its hold is settled now, and logged when late), else ``conflict``. Returns
    (op, prepared event, hold, "duplicate" | "conflict") per commit."""
    if not commits:
        return []
    stored = run_all([("SELECT type, ts, properties FROM usage_event WHERE customer_id = ? AND event_id = ?",
                       (p.customer, p.event_id)) for _op, p, _hold in commits])
    out, settle = [], []
    for (op, p, hold), rows in zip(commits, stored):
        if rows:
            etype, ts, props = rows[0]
            props = json.loads(props) if isinstance(props, str) else props
            if same(op, hold, (p.event_id, etype, int(ts), props)):
                out.append((op, p, hold, "duplicate"))
                if hold.status in OPEN_HOLD:
                    settle.append((_SETTLE, (p.event_id, now_us, hold.id)))
                    if hold.late_at(now_us):
                        settle.append((_LATE_IF_SETTLED, (hold.id, p.event_id, now_us)))
                continue
        out.append((op, p, hold, "conflict"))
    if settle:
        run_all(settle, returns_rows=False)
    return out
