"""Idempotent batch ingestion: ``Ledger.record(events) -> BatchResult``.

Every event gets exactly one result: ``accepted`` (committed now), ``duplicate`` (same id
and content already stored: counted once), ``conflict`` (same id, other content: nothing
changed) or ``rejected`` (with a reason code). A chunk is one transaction: results are
only reported after its commit, and a bad event never affects the good ones around it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from billing.catalog import Catalog
from billing.costs import CostBook
from billing.errors import ErrorCode
from billing.events import BUILTIN_TYPES
from billing.ledger import event_store, repository
from billing.ledger.counters import CounterPlanner, subscription_views
from billing.ledger.prepare import Prepared, Pricer, Rejection, prepare
from billing.ledger.types import to_us


@dataclass(frozen=True)
class EventResult:
    index: int
    id: str | None
    customer: str | None
    status: str  # accepted | duplicate | conflict | rejected
    code: str | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "customer": self.customer, "status": self.status,
                "code": self.code, "message": self.message}


@dataclass
class BatchResult:
    results: list[EventResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def accepted(self) -> int:
        return self.count("accepted")

    def merge(self, other: "BatchResult") -> None:
        self.results.extend(other.results)

    def to_json(self, max_errors: int = 1000) -> dict[str, Any]:
        errors = [r.to_json() for r in self.results if r.status in ("conflict", "rejected")]
        return {"accepted": self.accepted, "duplicates": self.count("duplicate"),
                "conflicts": self.count("conflict"), "rejected": self.count("rejected"),
                "errors": errors[:max_errors]}


class Ledger:
    """The append-only usage ledger over one database."""

    def __init__(self, engine: Engine, catalog: Catalog, book: CostBook | None = None, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 future_tolerance_seconds: int = 300):
        self.engine = engine
        self.catalog = catalog
        self.book = book or CostBook.load_default()
        self.clock = clock
        self.tolerance_us = future_tolerance_seconds * 1_000_000
        self.pricer = Pricer(self.book)
        types = set(BUILTIN_TYPES)
        for plan in catalog.all():
            types |= plan.event_types
        self.known_types = frozenset(types)

    def record(self, events: Iterable[Any], *, chunk_size: int = 10_000,
               progress: Callable[[int], None] | None = None) -> BatchResult:
        result = BatchResult()
        chunk: list[Any] = []
        offset = 0
        for raw in events:
            chunk.append(raw)
            if len(chunk) >= chunk_size:
                result.merge(self._record_chunk(chunk, offset))
                offset += len(chunk)
                if progress:
                    progress(len(chunk))
                chunk = []
        if chunk:
            result.merge(self._record_chunk(chunk, offset))
            if progress:
                progress(len(chunk))
        return result

    def _record_chunk(self, raws: list[Any], offset: int) -> list[EventResult] | BatchResult:
        now_us = to_us(self.clock())
        results: list[EventResult | None] = [None] * len(raws)
        prepared: list[tuple[int, Prepared]] = []
        first_seen: dict[tuple[str, str], int] = {}
        for i, raw in enumerate(raws):
            p = prepare(raw, now_us=now_us, tolerance_us=self.tolerance_us, known_types=self.known_types,
                        pricer=self.pricer)
            if isinstance(p, Rejection):
                results[i] = _result(offset + i, raw, "rejected", p.code, p.message)
                continue
            key = (p.customer, p.event_id)
            if key in first_seen:  # repeated inside this batch: compare with the first copy
                first = prepared[first_seen[key]][1]
                same = (first.type, first.ts, first.properties_json) == (p.type, p.ts, p.properties_json)
                results[i] = _result(offset + i, raw, "duplicate" if same else "conflict",
                                     None if same else ErrorCode.EVENT_CONFLICT,
                                     None if same else "same id sent twice in this batch with different content")
                continue
            first_seen[key] = len(prepared)
            prepared.append((i, p))

        with self.engine.begin() as conn:
            session = Session(bind=conn)
            customers = repository.known_customers(session, {p.customer for _, p in prepared})
            good = []
            for i, p in prepared:
                if p.customer not in customers:
                    results[i] = _result(offset + i, raws[i], "rejected", ErrorCode.UNKNOWN_CUSTOMER,
                                         f"unknown customer {p.customer!r}; create it first")
                else:
                    good.append((i, p))
            inserted = event_store.insert_events(conn, [p for _, p in good])
            missing = [(p.customer, p.event_id) for _, p in good if (p.customer, p.event_id) not in inserted]
            stored = event_store.existing_events(conn, missing) if missing else {}
            planner = CounterPlanner(subscription_views(
                repository.subscriptions_for(session, {p.customer for _, p in good}), customers, self.catalog))
            for i, p in good:
                key = (p.customer, p.event_id)
                if key in inserted:
                    planner.add(p.customer, p.type, p.ts, p.properties, p.cost_pico)
                    results[i] = _result(offset + i, raws[i], "accepted")
                    continue
                etype, ts, props = stored[key]
                if (etype, ts, props) == (p.type, p.ts, json.loads(p.properties_json)):
                    results[i] = _result(offset + i, raws[i], "duplicate")
                else:
                    results[i] = _result(offset + i, raws[i], "conflict", ErrorCode.EVENT_CONFLICT,
                                         "an event with this id exists with different content; nothing changed")
            event_store.upsert_counters(conn, planner.deltas)
            session.close()
        # the transaction has committed: only now are results reported
        batch = BatchResult()
        batch.results = [r for r in results if r is not None]
        return batch


def _result(index: int, raw: Any, status: str, code: ErrorCode | None = None,
            message: str | None = None) -> EventResult:
    rid = raw.get("id") if isinstance(raw, dict) else getattr(raw, "id", None)
    cust = raw.get("customer") if isinstance(raw, dict) else getattr(raw, "customer", None)
    return EventResult(index, rid if isinstance(rid, str) else None, cust if isinstance(cust, str) else None,
                       status, str(code) if code else None, message)
