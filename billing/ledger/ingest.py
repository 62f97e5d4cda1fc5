"""Idempotent batch ingestion: ``Ledger.record(events) -> BatchResult``.

Every event gets exactly one result: ``accepted`` (committed now), ``duplicate`` (same id
and content already stored: counted once), ``conflict`` (same id, other content: nothing
changed) or ``rejected`` (with a reason code). A chunk is one transaction: results are
only reported after its commit, and a bad event never affects the good ones around it.

An accepted event the cost book could not price, or whose type no plan meters, is stored
all the same; its result carries the warning (``unpriced_model`` / ``unmetered_type``).
"""

from __future__ import annotations

import gc
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine
from sqlmodel import Session

from billing.catalog import Catalog
from billing.costs import CostBook
from billing.errors import ErrorCode
from billing.events import BUILTIN_TYPES
from billing.rating.meters import MEASURED
from billing.store import event_store, partitions, repository, rollup_sql
from billing.alerts.budget import BudgetAlerts
from billing.store.cost_prices import CostSource, connection_fetch
from billing.store.retry import Retry
from billing.ledger.counters import CounterPlanner, subscription_views
from billing.ledger.rollups import RollupPlanner
from billing.quota.alerts import alerts_on
from billing.ledger.prepare import (TASK_PROPERTIES, Prepared, Pricer, Rejection, prepare_batch, raw_key as _raw_key,
                                    reprice, warning_of)
from billing.ledger.prepare_process import PrepareOptions
from billing.store.types import to_us


class EventResult(NamedTuple):
    index: int
    id: str | None
    customer: str | None
    status: str  # accepted | duplicate | conflict | rejected
    code: str | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "customer": self.customer, "status": self.status,
                "code": self.code, "message": self.message}


class BatchResult:
    """Per-event outcomes, stored compactly (a status per event, details only for problems).

    ``keep_events=False`` (a long import) keeps only the counts and the first
    ``max_problems`` problems (conflicts and rejections, with their id and customer), so its
    memory does not grow with the number of events."""

    def __init__(self, keep_events: bool = True, max_problems: int = 1000) -> None:
        self.keep_events = keep_events
        self.max_problems = max_problems
        self.statuses: list[str] = []
        self.sources: list[Any] = []  # the events as given (their id/customer are read lazily)
        self.details: dict[int, tuple[str, str]] = {}  # index -> (code, message)
        self.counts: dict[str, int] = {"accepted": 0, "duplicate": 0, "conflict": 0, "rejected": 0}
        self.size = 0  # events seen
        self.problems: list[EventResult] = []  # keep_events=False: the first max_problems problems
        self.unpriced = 0  # accepted events stored unpriced / unmetered (their results carry the warning)
        self.unmetered = 0

    def count(self, status: str) -> int:
        return self.counts.get(status, 0)

    @property
    def accepted(self) -> int:
        return self.count("accepted")

    @property
    def results(self) -> list[EventResult]:
        if not self.keep_events:
            raise ValueError("this BatchResult keeps counts and problems only (keep_events=False)")
        return [self.result(i) for i in range(len(self.statuses))]

    def result(self, index: int) -> EventResult:
        code, message = self.details.get(index, (None, None))
        event_id, customer = _raw_key(self.sources[index])
        return EventResult(index, event_id, customer, self.statuses[index], code, message)

    def add(self, statuses: list[str], raws: list[Any], details: dict[int, tuple[str, str]],
            unpriced: int = 0, unmetered: int = 0) -> None:
        """Take the outcomes of the next events (a committed chunk); ``details`` also holds
        the warnings of accepted events kept unpriced or unmetered."""
        offset = self.size
        self.unpriced += unpriced
        self.unmetered += unmetered
        self.size += len(statuses)
        for status in self.counts:
            self.counts[status] += statuses.count(status)
        if self.keep_events:
            self.statuses.extend(statuses)
            self.sources.extend(raws)
            self.details.update({offset + i: v for i, v in details.items()})
            return
        room = self.max_problems - len(self.problems)
        for i in sorted(details):
            if room <= 0:
                break
            if statuses[i] in ("conflict", "rejected"):
                event_id, customer = _raw_key(raws[i])
                self.problems.append(EventResult(offset + i, event_id, customer, statuses[i], *details[i]))
                room -= 1

    def errors(self) -> list[EventResult]:
        """Conflicts and rejections, in event order."""
        if not self.keep_events:
            return list(self.problems)
        return [self.result(i) for i in sorted(self.details) if self.statuses[i] in ("conflict", "rejected")]

    def to_json(self, max_errors: int = 1000) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.count("duplicate"),
                "conflicts": self.count("conflict"), "rejected": self.count("rejected"),
                "unpriced": self.unpriced, "unmetered": self.unmetered,
                "errors": [e.to_json() for e in self.errors()[:max_errors]]}


class Ledger:
    """The append-only usage ledger over one database."""

    def __init__(self, engine: Engine, catalog: Catalog, book: CostBook | None = None, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 future_tolerance_seconds: int | None = None, alerts: bool = True):
        """``book``: price with exactly this book; default: the process's book
        (``billing.store.cost_prices``: shipped, ``BILLING_COSTS``, prices added to this
        ledger), kept up to date as prices are added. ``future_tolerance_seconds``: default
        ``BILLING_FUTURE_TOLERANCE_SECONDS`` (300), the same for every door. ``alerts``:
        evaluate budget alerts after commits."""
        if future_tolerance_seconds is None:
            from billing.config import get_settings

            future_tolerance_seconds = get_settings().future_tolerance_seconds
        self.engine = engine
        self.catalog = catalog
        self.costs = CostSource(engine, book=book)
        self._pricer = Pricer(self.costs.book)
        self.clock = clock
        self.tolerance_us = future_tolerance_seconds * 1_000_000
        self._cycle_periods: dict[tuple, tuple[int, int]] = {}
        types = set(BUILTIN_TYPES)
        for plan in catalog.all():
            types |= plan.event_types
        self.known_types = frozenset(types)
        self.measured = measured_properties(catalog)
        self.task_properties = task_properties(catalog)
        self._customers: dict[str, str] = {}  # customer id -> timezone, of customers seen to exist
        # budget alerts of the customers a committed chunk recorded usage of (every door)
        self.alerts = BudgetAlerts(engine, catalog, clock) if alerts else None
        self.retry = Retry()
        self.months = partitions.Months()  # usage_event's partitions known to exist (PostgreSQL)
        self._rollup_dims: tuple[str, ...] | None = None  # the rollups' dimensions, as last read

    def close(self) -> None:
        """Close the connections the budget alerts keep."""
        if self.alerts is not None:
            self.alerts.close()

    @property
    def book(self) -> CostBook:
        return self.costs.book

    @property
    def pricer(self) -> Pricer:
        """Prices of the current book (a new one when the stored prices change)."""
        pricer = self._pricer
        if pricer.book is not self.costs.book:
            pricer = self._pricer = Pricer(self.costs.book)
        return pricer

    def record(self, events: Iterable[Any], *, chunk_size: int = 50_000,
               progress: Callable[[int], None] | None = None, result: BatchResult | None = None) -> BatchResult:
        """Record events in chunks of ``chunk_size`` (one transaction each): the one way into
        the ledger (the HTTP batch, ``billing events import``, the Python client and quota
        commits follow the same rules: ``prepare``, ``CounterPlanner`` for counters and agent
        task usage, ``BudgetAlerts`` after the commit).

        A two-stage pipeline: while one chunk is written to the database (a worker thread;
        the drivers release the GIL while the database works), the next one is validated and
        costed. Chunks commit in order, and a chunk's results are added only after its commit.
        ``result``: where the outcomes go (e.g. ``BatchResult(keep_events=False)`` for a long
        import whose memory must not grow with its length). ``events`` with a ``chunks(size)``
        method (``billing.ledger.jsonl.JsonlEvents``) hands over its lists of events whole.
        """
        result = BatchResult() if result is None else result
        self.costs.refresh()
        alerting: set[str] = set()  # customers whose current period this call added usage to
        try:
            self._record(events, chunk_size, progress, result, alerting)
        finally:  # also when a later chunk or the source failed: what committed is evaluated
            self._alert(alerting)
        return result

    def _record(self, events: Iterable[Any], chunk_size: int, progress: Callable[[int], None] | None,
                result: BatchResult, alerting: set[str]) -> None:
        if isinstance(events, (list, tuple)) and len(events) <= min(_SMALL_BATCH, chunk_size):
            # the hot path of an API call or a quota commit: no thread, no GC games
            if events:
                self._finish(self._store_chunk(self._prepare_chunk(list(events)), alerting), result, progress)
            return
        gc_was_enabled = gc.isenabled()
        gc.disable()  # bulk ingestion allocates millions of small objects; collect once at the end
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-store") as writer:
                pending = None
                last_alerts = time.monotonic()
                try:
                    for staged in self._staged_chunks(events, chunk_size, result.keep_events):
                        if pending is not None:
                            done, pending = pending, None
                            self._finish(done.result(), result, progress)
                            del done  # (its chunk is written: free it before the next one is staged)
                            if time.monotonic() - last_alerts > _ALERT_EVERY_S:  # a long import: now and then
                                self._alert(alerting)
                                last_alerts = time.monotonic()
                        pending = writer.submit(self._store_chunk, staged, alerting)
                finally:  # the last chunk, or the one being written when the source failed: it
                    if pending is not None:  # commits, and its results count
                        self._finish(pending.result(), result, progress)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _alert(self, customers: set[str]) -> None:
        """Budget alerts of ``customers`` (their usage is committed), then forget them."""
        if self.alerts is not None and customers:
            self.alerts.evaluate_quietly(sorted(customers))
        customers.clear()

    @staticmethod
    def _finish(staged: "_Staged", result: BatchResult, progress: Callable[[int], None] | None) -> None:
        details, unpriced, unmetered = staged.problems, 0, 0
        for i, p in staged.flagged.items():  # stored, with what it lacks
            if staged.status[i] == "accepted" and (p.unpriced or p.unmetered):
                if details is staged.problems:
                    details = dict(details)
                details[i] = warning_of(p)
                unpriced += p.unpriced is not None
                unmetered += p.unmetered is not None
        result.add(staged.status, staged.raws, details, unpriced, unmetered)
        if progress:
            progress(len(staged.raws))

    def _staged_chunks(self, events: Iterable[Any], chunk_size: int, keep_raws: bool) -> Iterator["_Staged"]:
        """Stage 1 of each chunk, in order: prepared here (``_prepare_chunk``), or, for a
        source with ``prepared_chunks`` (``billing.ledger.prepare_process``), by its own
        process with the same ``prepare_batch`` and this ledger's options, then staged here."""
        if hasattr(events, "prepared_chunks"):
            if keep_raws:
                raise ValueError("events prepared in another process are recorded with BatchResult(keep_events=False)")
            options = self.prepare_options()
            for chunk in events.prepared_chunks(options, chunk_size):
                yield self._stage(chunk.results, chunk.flagged, options.book,
                                  raws=_RejectedKeys(chunk.size, chunk.rejected))
            return
        chunks = events.chunks(chunk_size) if hasattr(events, "chunks") else _chunks(events, chunk_size)
        for chunk in chunks:
            yield self._prepare_chunk(chunk, keep_raws=keep_raws)

    def prepare_options(self) -> PrepareOptions:
        """What ``prepare_batch`` takes from this ledger (the book: the current one)."""
        return PrepareOptions(self.pricer.book, self.tolerance_us, self.known_types, self.measured,
                              self.task_properties)

    def _prepare_chunk(self, raws: list[Any], keep_raws: bool = True) -> "_Staged":
        """Stage 1 (no database): validate, cost, and classify repeats inside the chunk."""
        flagged: dict[int, Prepared] = {}
        pricer = self.pricer
        results = prepare_batch(raws, now_us=to_us(self.clock()), tolerance_us=self.tolerance_us,
                                known_types=self.known_types, pricer=pricer, measured=self.measured,
                                task_properties=self.task_properties, flagged=flagged)
        if not keep_raws:  # a long import: the raw events are not kept past this point (memory)
            raws = _RejectedKeys(len(raws), {i: _raw_key(raws[i]) for i, p in enumerate(results)
                                             if type(p) is Rejection})
        return self._stage(results, flagged, pricer.book, raws)

    def _stage(self, results: list[Prepared | Rejection], flagged: dict[int, Prepared], book: CostBook,
               raws: "list[Any] | _RejectedKeys") -> "_Staged":
        """A prepared chunk's statuses so far: rejections, and repeats inside the chunk.
        ``raws``: the events as given, or (a long import) the keys of the rejected ones."""
        n = len(results)
        status: list[str] = ["accepted"] * n
        problems: dict[int, tuple[str, str]] = {}
        copies: list[tuple[int, int, Prepared]] = []  # (index, index of the first copy, event) of repeats
        if Rejection in set(map(type, results)):
            index = [i for i, p in enumerate(results) if type(p) is not Rejection]
            for i, p in enumerate(results):
                if type(p) is Rejection:
                    status[i] = "rejected"
                    problems[i] = (str(p.code), p.message)
            rows = [results[i] for i in index]
        else:  # the common case: every event valid, row i is event i
            index, rows = None, results
        # an id repeated in the chunk (distinct ids, the common case, are checked without
        # building a key tuple per row)
        if len(set(map(_EVENT_ID, rows))) < len(rows) and len(set(map(_KEY, rows))) < len(rows):
            pairs = self._split_repeats(_numbered(rows, index), status, problems, copies)
            index, rows = [i for i, _ in pairs], [p for _, p in pairs]
        if isinstance(raws, _RejectedKeys):
            raws = _Keys(raws, rows, index, copies)
        # the chunk's rollups, planned here (while the chunk before is written) under the
        # dimensions last seen; the writer plans them again if anything differs
        dims = self._rollup_dims
        rollups = None
        if dims is not None and len(rows) > _SMALL_BATCH:
            rollups = RollupPlanner(dims)
            rollups.add_rows(rows)
        return _Staged(raws, status, problems, rows, index, copies, flagged, book, rollups)

    def _known_customers(self, session: Session, named: set[str]) -> dict[str, str]:
        """customer id -> timezone for the ids of ``named`` that exist. A customer is never
        deleted and its timezone never changes, so the ones found stay known to this ledger
        (an unknown id is asked about again each time)."""
        known = self._customers
        unknown = [c for c in named if c not in known]
        found = repository.known_customers(session, unknown) if unknown else {}
        if found:
            if len(known) > 1_000_000:  # a new dict (not clear()): a concurrent call keeps its own
                self._customers = {}
            self._customers.update(found)
        return {c: tz for c in named if (tz := known.get(c) or found.get(c)) is not None}

    @staticmethod
    def _split_repeats(prepared: list[tuple[int, Prepared]], status: list[str], problems: dict[int, tuple[str, str]],
                       copies: list[tuple[int, int, Prepared]]) -> list[tuple[int, Prepared]]:
        """Keep the first copy of each (customer, id) repeated inside the chunk; the others
        are duplicates (same content) or conflicts, recorded in ``copies``."""
        first_seen: dict[tuple[str, str], tuple[int, Prepared]] = {}
        firsts: list[tuple[int, Prepared]] = []
        for i, p in prepared:
            key = (p.customer, p.event_id)
            seen = first_seen.get(key)
            if seen is not None:  # repeated inside this batch: compare with the first copy
                first = seen[1]
                copies.append((i, seen[0], p))
                if (first.type, first.ts, first.properties) == (p.type, p.ts, p.properties):
                    status[i] = "duplicate"
                else:
                    status[i] = "conflict"
                    problems[i] = (str(ErrorCode.EVENT_CONFLICT), "same id sent twice in this batch with different content")
                continue
            first_seen[key] = (i, p)
            firsts.append((i, p))
        return firsts

    def _store_chunk(self, staged: "_Staged", alerting: set[str]) -> "_Staged":
        """Stage 2: ``_store_once`` in one transaction, run again from the start when the
        database aborted it (a deadlock or serialization failure: nothing of it was written).
        Adds to ``alerting`` the customers whose budget alerts it may have moved."""
        status, problems = list(staged.status), dict(staged.problems)
        for attempt in self.retry.attempts():
            try:
                stored = self._store_once(staged)
                break
            except Exception as exc:
                self.months.forget()  # (a partition it created was rolled back; or one was dropped)
                if not (self.retry.retryable(exc, attempt) or
                        (partitions.missing_partition(exc) and attempt + 1 < self.retry.max_attempts)):
                    raise
                staged.status[:], staged.problems = list(status), dict(problems)  # as before the attempt
        alerting.update(stored)
        return staged  # committed: only now may its results be reported

    def _store_once(self, staged: "_Staged") -> set[str]:
        """Insert the new events, classify the rest, bump counters, hourly rollups and agent
        task usage, all in ONE transaction. Returns the customers with budget alerts (on a plan that has
        them) whose current period it counted usage in (alerts measure the current period)."""
        rows, index = staged.rows, staged.index
        stored: dict[tuple[str, str], tuple] = {}
        with self.engine.begin() as conn:
            repriced = self._price_again(conn, staged)  # first: its lock comes before any other (cost_prices)
            session = Session(bind=conn)
            named = set(map(_CUSTOMER, rows))
            customers = self._known_customers(session, named)
            if len(customers) < len(named):
                rows, index = _reject_unknown_customers(staged, rows, index, customers)
                named = set(customers)
            rows, index = self._place(conn, staged, rows, index)
            inserted = event_store.insert_events(conn, rows)
            # subscriptions are read after the insert (billing.ledger.recount relies on this order)
            views = subscription_views(repository.subscription_rows(session, named), customers, self.catalog)
            planner = CounterPlanner(views, self._cycle_periods)
            missing: list[tuple[int, Prepared]] = []
            if inserted is event_store.ALL_INSERTED:
                new_rows = rows
            else:
                new_rows = [p for p in rows if (p.customer, p.event_id) in inserted]
                missing = [(i, p) for i, p in _numbered(rows, index) if (p.customer, p.event_id) not in inserted]
            planner.add_many(new_rows)
            planner.add_tasks(new_rows)
            if missing:
                stored = event_store.existing_events(conn, [(p.customer, p.event_id) for _, p in missing])
                _classify_existing(staged, missing, stored)
            event_store.upsert_counters(conn, planner.deltas)
            if new_rows:  # the hourly rollups of the events this chunk inserted (billing.ledger.rollups)
                dims = self._rollup_dims = rollup_sql.dimensions(conn)
                rollups = staged.rollups
                if (rollups is None or rollups.dimensions != dims or new_rows is not staged.rows or repriced):
                    rollups = RollupPlanner(dims)
                    rollups.add_rows(new_rows)
                rollup_sql.upsert_rollups(conn, rollups.deltas)
            event_store.upsert_tasks(conn, planner.tasks, to_us(self.clock()))
            session.close()
        _classify_copies(staged, stored)
        return self._alerted_customers(views, planner)

    def _place(self, conn, staged: "_Staged", rows: list[Prepared],
               index: list[int] | None) -> tuple[list[Prepared], list[int] | None]:
        """Rejects (``event_archived``) the rows of months ``billing events archive`` archived;
        on PostgreSQL, creates the partitions the others' months lack (``billing.store.partitions``)."""
        if not rows:
            return rows, index
        stamps = list(map(_TS, rows))
        low = min(stamps)
        horizon = partitions.horizon_us(conn)
        if horizon is not None and low < horizon:
            rows, index = _reject_archived(staged, rows, index, horizon)
            stamps = list(map(_TS, rows))
            if not rows:
                return rows, index
            low = min(stamps)
        if conn.dialect.name == "postgresql":
            self.months.ensure(partitions.sql_runner(conn), low, max(stamps), stamps)
        return rows, index

    def _alerted_customers(self, views: list, planner: CounterPlanner) -> set[str]:
        """The customers on a plan with budget alerts whose current period a chunk's counters
        moved, and those with a soft scoped budget whose counters it moved (their windows need
        not be the period)."""
        if self.alerts is None:
            return set()
        soft = self.alerts.soft_customers()
        if not soft and not any(alerts_on(v.plan) for v in views):
            return set()
        now_us = to_us(self.clock())
        current = {v.customer_id: planner.period_bounds(v, now_us)[0] for v in views
                   if alerts_on(v.plan) and v.covers(now_us)}
        # the counters it moved are keyed by period: one of the current period is new usage there
        return {c for (c, _meter, start) in planner.deltas if current.get(c) == start or c in soft}


    def _price_again(self, conn, staged: "_Staged") -> bool:
        """First thing in a chunk's transaction when it holds events the book could not
        price: wait for prices being added (``cost_prices.lock_to_price``) and, if the
        stored prices changed, price those events again (in place in ``staged``)."""
        again = self.settle_unpriced(connection_fetch(conn), conn.dialect.name == "postgresql",
                                     list(staged.flagged.values()), staged.book)
        if again:
            staged.rows[:] = [again.get(id(p), p) for p in staged.rows]
            staged.flagged.update({i: again.get(id(p), p) for i, p in staged.flagged.items()})
        return bool(again)

    def settle_unpriced(self, fetch, pg: bool, events: list[Prepared], priced_with: CostBook) -> dict[int, Prepared]:
        """In a transaction about to store ``events`` (prepared with ``priced_with`` or a
        newer book), if any is unpriced: wait for prices being added
        (``cost_prices.lock_to_price``) and bring the book up to date; if it is not
        ``priced_with`` any more, the unpriced events priced again with it, by ``id()`` of
        the old (else {})."""
        unpriced = [p for p in events if p.unpriced]
        if not unpriced:
            return {}
        self.costs.settle(fetch, pg)
        pricer = self.pricer
        if pricer.book is priced_with:
            return {}
        return {id(p): reprice(p, pricer) for p in unpriced}


class _RejectedKeys(NamedTuple):
    """A chunk's size and the (id, customer) of each event stage 1 rejected, by position."""

    size: int
    rejected: dict[int, tuple[str | None, str | None]]


class _Keys:
    """In place of a chunk's raw events once prepared (``keep_events=False``): each event's
    id and customer (all a compact ``BatchResult`` reads of the problems), from the prepared
    rows and, for the events prepare rejected, from their raw form read then. The raw dicts
    themselves can then be freed while the chunk is written."""

    def __init__(self, keys: _RejectedKeys, rows: list[Prepared], index: list[int] | None,
                 copies: list[tuple[int, int, Prepared]]):
        self.size = keys.size
        self.rejected = keys.rejected
        self.rows, self.index, self.copies = rows, index, copies
        self._by_position: dict[int, Prepared] | None = None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, str | None]:
        key = self.rejected.get(i)
        if key is None:
            if self._by_position is None:
                self._by_position = dict(_numbered(self.rows, self.index))
                self._by_position.update((j, p) for j, _first, p in self.copies)
            p = self._by_position.get(i)
            key = (p.event_id, p.customer) if p is not None else (None, None)
        return {"id": key[0], "customer": key[1]}


@dataclass
class _Staged:
    raws: list[Any]
    status: list[str]
    problems: dict[int, tuple[str, str]]
    rows: list[Prepared]  # the events to store, first copies only
    index: list[int] | None  # each row's position in the chunk (None: row i is event i)
    copies: list[tuple[int, int, Prepared]]
    flagged: dict[int, Prepared] = field(default_factory=dict)  # position -> unpriced or unmetered event
    book: CostBook | None = None  # the cost book the events were priced with
    rollups: RollupPlanner | None = None  # the rows' rollups, planned in stage 1 (None: by the writer)


def _numbered(rows: list[Prepared], index: list[int] | None) -> list[tuple[int, Prepared]]:
    """(position in the chunk, row) pairs (``index`` None: row i is event i)."""
    return list(enumerate(rows)) if index is None else list(zip(index, rows))


def _reject_unknown_customers(staged: _Staged, rows: list[Prepared], index: list[int] | None,
                              customers: dict[str, str]) -> tuple[list[Prepared], list[int]]:
    """The chunk's rows of known ``customers`` and their positions; the others are rejected."""
    kept_rows, kept_index = [], []
    for i, p in _numbered(rows, index):
        if p.customer in customers:
            kept_rows.append(p)
            kept_index.append(i)
        else:
            staged.status[i] = "rejected"
            staged.problems[i] = (str(ErrorCode.CUSTOMER_NOT_FOUND), f"unknown customer {p.customer!r}; create it first")
    return kept_rows, kept_index


def _reject_archived(staged: _Staged, rows: list[Prepared], index: list[int] | None,
                     horizon: int) -> tuple[list[Prepared], list[int]]:
    """The chunk's rows at or after the archive ``horizon`` and their positions; the others are rejected."""
    kept_rows, kept_index = [], []
    for i, p in _numbered(rows, index):
        if p.ts >= horizon:
            kept_rows.append(p)
            kept_index.append(i)
        else:
            staged.status[i] = "rejected"
            staged.problems[i] = (str(ErrorCode.EVENT_ARCHIVED), partitions.archived_message(horizon))
    return kept_rows, kept_index


def _classify_existing(staged: _Staged, missing: list[tuple[int, Prepared]],
                       stored: dict[tuple[str, str], tuple]) -> None:
    """Events whose id was stored already: a duplicate when the content matches, else a conflict."""
    for i, p in missing:
        etype, ts, props = stored[(p.customer, p.event_id)]
        if (etype, ts, props) == (p.type, p.ts, json.loads(p.properties_json)):
            staged.status[i] = "duplicate"
        else:
            staged.status[i] = "conflict"
            staged.problems[i] = (str(ErrorCode.EVENT_CONFLICT),
                                  "an event with this id exists with different content; nothing changed")


def _classify_copies(staged: _Staged, stored: dict[tuple[str, str], tuple]) -> None:
    """A repeat of an event within the chunk that was not stored takes its first copy's answer."""
    status, problems = staged.status, staged.problems
    for i, first, p in staged.copies:
        if status[first] == "rejected":  # (unknown customer): rejected alike
            status[i] = status[first]
            problems[i] = problems[first]
        elif status[first] == "conflict":  # the stored version decides, as for a first copy
            etype, ts, props = stored[(p.customer, p.event_id)]
            if (etype, ts, props) == (p.type, p.ts, json.loads(p.properties_json)):
                status[i] = "duplicate"
                problems.pop(i, None)
            else:
                status[i] = "conflict"
                problems[i] = problems[first]


def measured_properties(catalog: Catalog) -> frozenset[str]:
    """The properties some plan measures (sum, max, min, latest, avg, time-weighted sum): like the built-in quantities
    (tokens, steps...), an event's value for them must be a non-negative number."""
    return frozenset(m.property for plan in catalog.all() for m in plan.meters
                     if m.aggregation in MEASURED and m.property)


def task_properties(catalog: Catalog) -> frozenset[str]:
    """The properties that name an agent task (``task``, and each plan's ``task_property``):
    their values become task ids, so they must fit one."""
    return TASK_PROPERTIES | frozenset(plan.agent_limits.task_property for plan in catalog.all() if plan.agent_limits)


def _chunks(events: Iterable[Any], size: int):
    chunk: list[Any] = []
    for raw in events:
        chunk.append(raw)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_SMALL_BATCH = 1000  # up to this many events: one transaction in the calling thread
_ALERT_EVERY_S = 10.0  # a long import evaluates budget alerts this often (and at its end)


_KEY = itemgetter(0, 1)  # (customer, event id) of a Prepared row
_CUSTOMER = itemgetter(0)
_TS = itemgetter(3)
_EVENT_ID = itemgetter(1)
