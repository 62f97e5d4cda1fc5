"""When prices arrive, the events kept unpriced get their cost (re-costing).

``add_prices`` stores prices in the ledger (``billing costs add FILE``, the LiteLLM
import) and re-costs; ``recost`` re-costs with the process's book as it is (after a change
of ``BILLING_COSTS``, or to finish a re-cost that was interrupted). Both are idempotent:
an event is re-costed once, then it is priced; adding the same prices again changes nothing.

An event's content never changes: its cost is derived data (``cost_pico`` and the
``unpriced`` reason are not part of what makes a replay a duplicate). A re-cost of a page of
events (one transaction, retried on a serialization failure or deadlock) sets each event's
cost only if it is still unpriced, then moves by the exact difference, in key order:

- the running counters the event was counted in (``CounterPlanner``, the ingestion's rule,
  with the subscriptions read after the events were updated, as ingestion reads them after
  its insert: ``billing.ledger.recount`` relies on that order);
- the hourly rollups of the event (``billing.ledger.rollups``);
- the agent task usage of its task (the task property of the plan covering it);
- and it marks the finalized invoices whose period holds the event, so the next close
  re-rates that period through the late-event path (``billing.invoicing.late``): a
  cost-plus line grows by an adjustment on the next invoice; a finalized invoice never
  changes.

Concurrent ingestion: see ``billing.store.cost_prices`` (an event is priced at ingestion
or here, never both, never neither). Concurrent re-costs of the same events: the
conditional update lets one of them price each event.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from billing.catalog import Catalog
from billing.costs import CostBook, ModelPrice
from billing.store import recost_sql as sql
from billing.store import repository
from billing.store.cost_prices import (
    StoreResult, base_book, connection_fetch, layered, lock_to_add, settings_files, store_entries, stored_entries)
from billing.ledger.counters import CounterPlanner, subscription_views
from billing.ledger.rollups import RollupPlanner
from billing.store import rollup_sql
from billing.ledger.prepare import Prepared, Pricer, reprice
from billing.store.types import to_us

PAGE = 5_000  # events re-costed per transaction
PICO = Decimal(10) ** 12
_RETRIES = 5


@dataclass
class RecostResult:
    prices: StoreResult | None = None
    events: int = 0  # events priced now
    cost_pico: int = 0  # the cost they added
    by_model: dict[str, int] = field(default_factory=dict)  # model -> events priced now
    invoices_marked: int = 0  # finalized invoices whose period will be re-rated at the next close
    still_unpriced: int = 0  # events of the models looked at that the book still cannot price

    def to_json(self) -> dict:
        out = {"events_recosted": self.events, "cost_added": str(Decimal(self.cost_pico) / PICO),
               "by_model": dict(sorted(self.by_model.items())), "invoices_to_recheck": self.invoices_marked,
               "still_unpriced": self.still_unpriced}
        if self.prices is not None:
            out = {"added": self.prices.added, "replaced": self.prices.replaced, "unchanged": self.prices.unchanged,
                   **out}
        return out


def _retryable(exc: BaseException) -> bool:
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return state in ("40001", "40P01", "55P03")  # serialization failure, deadlock, lock not available


def _retrying(fn: Callable[[], object]):
    for attempt in range(_RETRIES):
        try:
            return fn()
        except DBAPIError as exc:
            if attempt + 1 < _RETRIES and _retryable(exc):
                time.sleep(0.05 * (attempt + 1))
                continue
            raise
    raise AssertionError("unreachable")


def add_prices(engine: Engine, catalog: Catalog, entries: Iterable[ModelPrice], *, origin: str,
               now: datetime | None = None, settings=None, progress: Callable[[int], None] | None = None
               ) -> RecostResult:
    """Store ``entries`` in the ledger's prices (same model and date: replaced), then
    re-cost the unpriced events of the models they price."""
    entries = list(entries)
    now = now or datetime.now(UTC)
    base = base_book(settings_files(settings))

    def store() -> tuple[StoreResult, CostBook]:
        with engine.begin() as conn:
            lock_to_add(conn)
            stored = store_entries(conn, entries, origin, now, base)
            return stored, layered(base, stored_entries(connection_fetch(conn)))

    stored, book = _retrying(store)
    names = {n for e in entries for n in (e.model, *e.aliases)}
    result = recost(engine, catalog, book=book, models={book.resolve(n) for n in names} - {None},
                    progress=progress)
    result.prices = stored
    return result


def recost(engine: Engine, catalog: Catalog, *, book: CostBook | None = None, models: set[str] | None = None,
           progress: Callable[[int], None] | None = None) -> RecostResult:
    """Price the unpriced events ``book`` (default: the process's, ``cost_prices.cost_book``)
    can price now; ``models``: only the events of models that resolve to these names."""
    if book is None:
        from billing.store.cost_prices import cost_book

        book = cost_book(engine)
    pricer = Pricer(book)
    result = RecostResult()
    with engine.connect() as conn:
        named = sql.unpriced_models(conn)
    for model in named:
        canonical = book.resolve(model)
        if canonical is None or (models is not None and canonical not in models):
            continue
        after = 0
        while True:
            after, more = _retrying(lambda: _page(engine, catalog, pricer, model, after, result))
            if progress:
                progress(more)
            if more < PAGE:
                break
    return result


def _page(engine: Engine, catalog: Catalog, pricer: Pricer, model: str, after: int,
          result: RecostResult) -> tuple[int, int]:
    """One transaction: re-cost up to ``PAGE`` unpriced events of ``model`` after row id
    ``after``. Returns (the last row id read, how many were read)."""
    with engine.begin() as conn:
        rows = sql.unpriced_page(conn, model, after, PAGE)
        if not rows:
            return after, 0
        priced: dict[int, tuple] = {}
        reasons = []
        still = 0
        for r in rows:
            p = reprice(Prepared(r.customer, r.event_id, r.type, r.ts, "", r.model, r.cost_pico, r.properties,
                                 r.unpriced), pricer)
            if p.unpriced is None:
                priced[r.id] = (r, p.cost_pico - r.cost_pico)
            else:
                still += 1
                if p.unpriced != r.unpriced:
                    reasons.append((r.id, p.unpriced))
        changed = sql.set_costs(conn, [(i, r.cost_pico + d) for i, (r, d) in priced.items()])
        sql.set_reasons(conn, reasons)
        moved = [priced[i] for i in sorted(changed)]
        if moved:
            marked = _follow(conn, catalog, moved)
        else:
            marked = 0
    # committed: count it
    result.events += len(moved)
    result.cost_pico += sum(d for _, d in moved)
    for r, _ in moved:
        result.by_model[r.model] = result.by_model.get(r.model, 0) + 1
    result.invoices_marked += marked
    result.still_unpriced += still
    return rows[-1].id, len(rows)


def _follow(conn, catalog: Catalog, moved: list[tuple[sql.UnpricedRow, int]]) -> int:
    """Counters, task usage and invoice marks of the re-costed events; returns the number of
    invoices marked."""
    customers = sorted({r.customer for r, _ in moved})
    session = Session(bind=conn)
    try:
        zones = repository.known_customers(session, customers)
        views = subscription_views(repository.subscription_rows(session, customers), zones, catalog)
    finally:
        session.close()
    planner = CounterPlanner(views)
    counters: dict[tuple[str, str, int], int] = defaultdict(int)
    tasks: dict[tuple[str, str], int] = defaultdict(int)
    subs = defaultdict(list)
    for view in views:
        subs[view.customer_id].append(view)
    for r, delta in moved:
        planner.deltas = {}
        planner.add(r.customer, r.type, r.ts, r.properties, delta)
        for key, (_end, _units, _events, cost, _is_max) in planner.deltas.items():
            counters[key] += cost
        covering = [v for v in subs.get(r.customer, ()) if v.covers(r.ts)]
        names = {v.plan.agent_limits.task_property if v.plan.agent_limits else "task" for v in covering} or {"task"}
        for name in sorted(names):
            task = r.properties.get(name)
            if task is not None:
                tasks[(r.customer, str(task))] += delta
    sql.add_counter_costs(conn, counters)
    rollups = RollupPlanner(rollup_sql.dimensions(conn))  # the rows of each event's hour move by its delta
    for r, delta in moved:
        rollups.add(r.customer, r.type, r.ts, r.model, r.properties, delta, count=0, sums=False)
    rollup_sql.upsert_rollups(conn, {k: v for k, v in rollups.deltas.items() if v[1]})
    sql.add_task_costs(conn, tasks)
    stamps = defaultdict(list)
    for r, _ in moved:
        stamps[r.customer].append(r.ts)
    marked = [inv for inv, customer, start, end in sql.invoiced_windows(conn, customers)
              if any(to_us(start) <= ts < to_us(end) for ts in stamps[customer])]
    sql.mark_for_recheck(conn, marked)
    return len(marked)
