"""Closing billing periods into invoices, through the pure rating engine (no second
implementation). One close rates every due period against one ledger snapshot
(``watermark``: the highest event id it saw, every lower one settled) and writes the
invoices in one transaction, so re-running it is idempotent, and a close killed midway
leaves nothing behind.

Closes run one at a time: the transaction's first statement takes the ledger's close lock
(``repository.lock_closes``), and everything, the snapshot included, is read after it, so
a close that waited sees what the one before it wrote. The database holds the same line
without the lock: each period's invoice has a unique ``dedupe_key``, and each correction
is keyed by what it corrects (the original invoice and the correction's generation,
``invoice_correction``), never by a snapshot's watermark. A close that meets another's
document anyway rolls back and runs again (``_ATTEMPTS``).

A close ``as_of`` an instant after the clock would finalize periods that have not ended:
it is refused unless the caller allows it (``allow_future``).

Usage comes from the running counters where they are exact for the period (one
subscription over the whole period, plain count / sum / max meters: see
``invoicing.usage``), read in the same snapshot as the watermark; otherwise from a SQL
aggregation of the events up to the watermark. Both give the same totals (a test holds
them equal), so which one rated a period never shows on the invoice.

Late events: after an invoice is finalized it never changes. When events arrive later
for its period (or disputes reverse its outcomes), the period is re-rated at the next
close (``invoicing.late``); a net increase lands as ``adjustment`` lines on the
subscription's next invoice, a net decrease is issued as a credit note (negative lines)
against the original.
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache

import sqlmodel
from sqlalchemy import Engine
from sqlmodel import Session

from billing.catalog import Catalog, Plan
from billing.errors import BillingError, ErrorCode
from billing.invoicing import advance, lifecycle, thresholds
from billing.invoicing import repository as repo
from billing.invoicing.documents import PICO, correction_key, doc_base, invoice_key, invoice_row, line_rows
from billing.invoicing.late import Correction, late_changes
from billing.invoicing.lifecycle import Action
from billing.alerts.lifecycle import documents_finalized
from billing.invoicing.usage import (
    SubscriptionRow, alone_in_period, counter_usage, late_detectable, period_events, period_key, plan_is_countable)
from billing.invoicing.windows import Window, rate_windows
from billing.ledger.counters import to_micro
from billing.store.models import Invoice, InvoiceLineRow
from billing.store.types import to_us
from billing.store.wide import join
from billing.money import dec_str, from_minor, minor_units
from billing.rating.periods import BillingCycle, Period
from billing.rating.types import LineKind, MeterTotals, RatedInvoice

# runs of a close whose transaction met another writer of the same rows (a deadlock, a
# serialization failure, a document or correction written first by someone else)
_ATTEMPTS = 3
_RETRY_STATES = frozenset({"40001", "40P01", "23505"})


def _sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL error code of a driver error, raised bare (the bulk writes use the
    driver's cursor) or wrapped by SQLAlchemy."""
    return getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)


@dataclass
class CloseResult:
    watermark: int = 0
    invoices: list[int] = field(default_factory=list)
    credit_notes: list[int] = field(default_factory=list)
    adjusted_periods: int = 0
    rated_from_counters: int = 0  # periods rated from the running counters (the rest from events)

    def to_json(self) -> dict:
        return {"watermark": self.watermark, "invoices": self.invoices, "credit_notes": self.credit_notes,
                "adjusted_periods": self.adjusted_periods, "rated_from_counters": self.rated_from_counters}


@dataclass
class _Job:
    sub: SubscriptionRow
    plan: Plan
    period: Period
    window_start: datetime
    window_end: datetime
    timezone: str
    events: int | None = None  # the period's event count, when the counters can tell late events
    # advance billing: the next window, whose advance fees this period's invoice bills, rated
    ahead: advance.AdvanceWindow | None = None
    ahead_rated: RatedInvoice | None = None
    # threshold invoicing: what the period's threshold invoices billed (its invoice takes it back)
    billed: thresholds.Billed | None = None


@dataclass
class _InvoiceBatch:
    """The invoices one close writes, side by side: each document, its lines, the grant
    credit it drew, its event count (None: nothing to recheck) and the corrections it bills."""
    docs: list[dict] = field(default_factory=list)
    lines: list[list[dict]] = field(default_factory=list)
    burns: list[dict] = field(default_factory=list)
    events: list[int | None] = field(default_factory=list)
    carried: list[list[Correction]] = field(default_factory=list)

    def add(self, doc: dict, lines: list[dict], burns: dict, events: int | None, fixes: list[Correction]) -> None:
        self.docs.append(doc)
        self.lines.append(lines)
        self.burns.append(burns)
        self.events.append(events)
        self.carried.append(fixes)

    def extend(self, other: _InvoiceBatch) -> None:
        for doc, lines, burns, events, fixes in zip(other.docs, other.lines, other.burns, other.events, other.carried):
            self.add(doc, lines, burns, events, fixes)


def _newest_invoices(rated: list[tuple[_Job, RatedInvoice]]) -> dict[int, int]:
    """subscription -> index in ``rated`` of its latest new invoice."""
    return {job.sub.id: i for i, (job, _) in enumerate(rated)}


def _credit_drawn(rated: list[tuple[_Job, RatedInvoice]]) -> dict[str, int]:
    """Grant credit (micro units) drawn by this run's new invoices, not yet stored as burns."""
    drawn: dict[str, int] = defaultdict(int)
    for job, inv in rated:
        for grant_id, amount in _burns(job, inv).items():
            if not grant_id.startswith("plan:"):
                drawn[grant_id] += to_micro(amount)
    return drawn


def _burns(job: _Job, inv: RatedInvoice) -> dict[str, Decimal]:
    """The grant credit a new invoice draws: its window's, less its threshold invoices'."""
    if job.billed is None:
        return inv.credits_used
    return thresholds.closing_burns(inv.credits_used, job.billed, inv.currency)


def _new_invoices(rated: list[tuple[_Job, RatedInvoice]], newest: dict[int, int], adjustments: list[Correction],
                  watermark: int, now: datetime) -> _InvoiceBatch:
    """One invoice per rated period; a subscription's latest one also bills its adjustments."""
    by_sub: dict[int, list[Correction]] = defaultdict(list)
    for fix in adjustments:
        by_sub[fix.sub_id].append(fix)
    batch = _InvoiceBatch()
    for i, (job, inv) in enumerate(rated):
        lines = line_rows(inv, job.window_start, job.window_end)
        if job.billed is not None:
            lines.extend(thresholds.closing_lines(job.billed, inv.currency, job.window_start, job.window_end))
        if job.ahead is not None:
            lines.extend(advance.advance_rows(job.ahead, job.ahead_rated))
        fixes = by_sub.get(job.sub.id, []) if newest[job.sub.id] == i else []
        for fix in fixes:
            lines.extend(fix.lines)
        for pos, row in enumerate(lines):
            row["position"] = pos
        doc = invoice_row(job.sub, job.plan, job.period, job.window_start, job.window_end, inv,
                          sum(r["amount_minor"] for r in lines), watermark, now)
        batch.add(doc, lines, _burns(job, inv), job.events, fixes)
    return batch


@lru_cache(maxsize=4096)
def _cycle(interval: str, anchor: str, timezone: str, anchor_at: datetime | None) -> BillingCycle:
    return BillingCycle(interval, anchor, timezone, anchor_at)


@lru_cache(maxsize=65536)
def _period_of(cycle: BillingCycle, at: datetime) -> Period:
    return cycle.period_containing(at)


@lru_cache(maxsize=65536)
def _next(cycle: BillingCycle, period: Period) -> Period:
    return cycle.next_period(period)


def cycle_for(sub, plan: Plan, timezone: str) -> BillingCycle:
    return _cycle(plan.billing.interval, plan.billing.anchor, timezone,
                  sub.anchor_at if plan.billing.anchor == "anniversary" else None)


def due_windows(sub, plan: Plan, timezone: str, as_of: datetime) -> list[tuple[Period, datetime, datetime]]:
    """(period, window start, window end) of every period of ``sub`` that has ended by ``as_of``."""
    cycle = cycle_for(sub, plan, timezone)
    out = []
    period = _period_of(cycle, sub.started_at)
    while True:
        start = max(period.start, sub.started_at)
        end = min(period.end, sub.ended_at) if sub.ended_at else period.end
        if start >= end or end > as_of:
            break
        out.append((period, start, end))
        if sub.ended_at is not None and period.end >= sub.ended_at:
            break
        period = _next(cycle, period)
    return out


class Invoicing:
    """``use_counters=False`` rates every period from its events and finds late events by
    reading them (the same invoices, slower: for comparisons and as an escape hatch)."""

    def __init__(self, engine: Engine, catalog: Catalog, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 use_counters: bool = True, future_tolerance_seconds: int = 300):
        self.engine = engine
        self.catalog = catalog
        self.clock = clock
        self.use_counters = use_counters
        self.future_tolerance = timedelta(seconds=future_tolerance_seconds)

    # ------------------------------------------------------------------ closing
    def close(self, as_of: datetime, *, allow_future: bool = False,
              progress: Callable[[int], None] | None = None) -> CloseResult:
        """Finalize every subscription period that ended by ``as_of`` (idempotent). An
        ``as_of`` more than ``future_tolerance_seconds`` after the clock is refused
        (``validation_error``) unless ``allow_future``."""
        if as_of.tzinfo is None:
            raise BillingError("as_of must include a timezone", code=ErrorCode.VALIDATION)
        self.check_as_of(as_of, allow_future)
        enabled = gc.isenabled()
        gc.disable()  # a close allocates millions of small acyclic objects: no collection passes meanwhile
        try:
            return self._close_retrying(as_of, progress)
        finally:
            if enabled:
                gc.enable()

    def _close_retrying(self, as_of: datetime, progress: Callable[[int], None] | None) -> CloseResult:
        """A close whose transaction met another writer of its rows rolled back whole: it
        runs again on what is committed now (a conflict ``_ATTEMPTS`` times is an error)."""
        attempt = 1
        while True:
            try:
                return self._close(as_of, progress)
            except Exception as exc:
                state = _sqlstate(exc)
                if state not in _RETRY_STATES:
                    raise
                if attempt == _ATTEMPTS:
                    raise BillingError(f"the close met concurrent writes to its documents {attempt} times "
                                       f"(SQLSTATE {state}); nothing was written, run it again",
                                       code=ErrorCode.CONFLICT) from exc
                attempt += 1

    def check_as_of(self, as_of: datetime, allow_future: bool = False) -> None:
        """A close may not finalize periods that have not ended yet by the clock, unless allowed."""
        now = self.clock()
        if allow_future or as_of <= now + self.future_tolerance:
            return
        raise BillingError(f"as_of {as_of.isoformat()} is after the clock ({now.isoformat()}): closing would finalize "
                           f"periods that have not ended, and finalized invoices never change; pass allow_future "
                           f"(--allow-future) to close them now", code=ErrorCode.VALIDATION,
                           details={"as_of": as_of.isoformat(), "now": now.isoformat()})

    def _close(self, as_of: datetime, progress: Callable[[int], None] | None) -> CloseResult:
        now = self.clock()
        result = CloseResult()
        with self.engine.begin() as conn:
            repo.lock_closes(conn)  # first: every read below sees what the previous close committed
            everyone = repo.all_subscriptions(conn)
            subs = [s for s in everyone if s.started_at <= as_of]
            zones = repo.customer_timezones(conn, {s.customer_id for s in subs})
            jobs = self._due_jobs(conn, subs, zones, as_of)
            overrides = repo.customer_thresholds(conn)  # customers' own invoicing thresholds
            finals = repo.finalized_invoices(conn, [s.id for s in subs])
            cover = repo.coverage(everyone)  # the subscriptions the jobs were made from
            snap = self._snapshot(conn, {period_key(j.sub.customer_id, j.period) for j in jobs},
                                  {(f.customer_id, to_us(f.period_start)) for f in finals}, cover)
            watermark = result.watermark = snap.watermark
            rated = self._rate_jobs(conn, jobs, snap, cover, zones, result)
            newest = _newest_invoices(rated)
            # an increase waits for the subscription's next invoice unless it can be billed now
            billable_now = {s.id for s in subs if s.id in newest or (s.ended_at is not None and s.ended_at <= as_of)}
            drawn = _credit_drawn(rated)
            adjustments, credit_notes = late_changes(self, conn, subs, zones, snap, cover, finals, billable_now, drawn)
            result.adjusted_periods = len(adjustments) + len(credit_notes)
            subs_by_id = {s.id: s for s in subs}
            batch = _InvoiceBatch()
            for doc, lines in advance.openings(conn, subs, self._plan_of, self._cycle_of(zones), as_of, now,
                                               watermark):
                batch.add(doc, lines, {}, None, [])
            batch.extend(_new_invoices(rated, newest, adjustments, watermark, now))
            self._add_standalone_adjustments(batch, adjustments, newest, subs_by_id, as_of, now, watermark)
            windows = thresholds.open_windows(conn, subs, self._plan_of, self._cycle_of(zones), as_of, overrides)
            for cut in thresholds.cut_thresholds(conn, windows, as_of, watermark, now, drawn):
                batch.add(cut.doc, cut.lines, cut.burns, None, [])
            ids = self._store_invoices(conn, batch, watermark, now)
            note_ids = self._store_credit_notes(conn, credit_notes, subs_by_id, watermark, now)
            repo.insert_corrections(conn, [
                {"corrected_invoice_id": fix.original_id, "generation": fix.generation, "document_id": doc_id}
                for doc_id, fixes in [*zip(ids, batch.carried), *((n, [fix]) for n, fix in zip(note_ids, credit_notes))]
                for fix in fixes])
            result.invoices = ids
            result.credit_notes = note_ids
            if progress:
                progress(len(jobs))
        return result

    def _due_jobs(self, conn, subs: list[SubscriptionRow], zones: dict[str, str], as_of: datetime) -> list[_Job]:
        """Every period due by ``as_of`` that has no invoice yet, one job each."""
        existing = repo.invoice_keys(conn, [s.id for s in subs])
        jobs: list[_Job] = []
        for sub in subs:
            plan = self.catalog.get(sub.plan_id, sub.plan_version)
            tz = zones.get(sub.customer_id, "UTC")
            for period, start, end in due_windows(sub, plan, tz, as_of):
                if invoice_key(sub.id, period) not in existing:
                    jobs.append(_Job(sub, plan, period, start, end, tz))
        return jobs

    def _plan_of(self, sub) -> Plan:
        return self.catalog.get(sub.plan_id, sub.plan_version)

    @staticmethod
    def _cycle_of(zones: dict[str, str]) -> Callable[[SubscriptionRow, Plan], BillingCycle]:
        return lambda sub, plan: cycle_for(sub, plan, zones.get(sub.customer_id, "UTC"))

    def _add_standalone_adjustments(self, batch: _InvoiceBatch, adjustments: list[Correction],
                                    newest: dict[int, int], subs_by_id: dict[int, SubscriptionRow],
                                    as_of: datetime, now: datetime, watermark: int) -> None:
        """Adjustments for subscriptions with no new invoice: ended subscriptions get a
        standalone invoice now; active ones wait for their next period's invoice."""
        for fix in adjustments:
            if fix.sub_id in newest:
                continue
            sub = subs_by_id[fix.sub_id]
            if sub.ended_at is None or sub.ended_at > as_of:
                continue
            batch.add(self._correction_doc(sub, fix, "invoice", now, watermark), fix.lines, {}, None, [fix])

    def _store_invoices(self, conn, batch: _InvoiceBatch, watermark: int, now: datetime) -> list[int]:
        """Finalizes and writes the batch's invoices, their recheck counts and credit burns."""
        self._finalize(batch.docs, repo.take_numbers(conn, "INV", len(batch.docs)), "INV", now)
        ids = repo.insert_invoices(conn, batch.docs, batch.lines)
        documents_finalized(conn, batch.docs, ids, now)  # invoice.finalized webhooks, same transaction
        repo.insert_rechecks(conn, [{"invoice_id": i, "watermark": watermark, "events": n}
                                    for i, n in zip(ids, batch.events) if n is not None])
        self._record_burns(conn, ids, batch.burns, batch.lines)
        return ids

    def _store_credit_notes(self, conn, credit_notes: list[Correction], subs_by_id: dict[int, SubscriptionRow],
                            watermark: int, now: datetime) -> list[int]:
        """Finalizes and writes one credit note per net decrease."""
        note_docs = [self._correction_doc(subs_by_id[fix.sub_id], fix, "credit_note", now, watermark)
                     for fix in credit_notes]
        note_lines = [fix.lines for fix in credit_notes]
        self._finalize(note_docs, repo.take_numbers(conn, "CN", len(note_docs)), "CN", now)
        note_ids = repo.insert_invoices(conn, note_docs, note_lines)
        documents_finalized(conn, note_docs, note_ids, now)  # credit_note.created webhooks
        self._record_burns(conn, note_ids, [{}] * len(note_ids), note_lines)
        return note_ids

    def _correction_doc(self, sub, fix: Correction, kind: str, now: datetime, watermark: int) -> dict:
        """A document of its own for one correction: a credit note (a net decrease, against
        the original) or an adjustment invoice (an ended subscription's net increase)."""
        plan = self.catalog.get(sub.plan_id, sub.plan_version)
        for pos, row in enumerate(fix.lines):
            row["position"] = pos
        doc = {**doc_base(sub, plan, fix.lines[0]["service_start"], fix.lines[0]["service_end"], now, watermark),
               "dedupe_key": correction_key(kind, fix.original_id, fix.generation), "total_minor": fix.total}
        if kind == "credit_note":
            doc.update(kind="credit_note", corrects_invoice_id=fix.original_id)
        return doc

    def _snapshot(self, conn, rate_keys: set[tuple[str, int]], check_keys: set[tuple[str, int]],
                  cover: dict[str, list[SubscriptionRow]]) -> repo.Snapshot:
        """The watermark and the counters, read at one instant.

        PostgreSQL hands out ids when a row is inserted, not when it commits: an ingestion
        still in flight can hold a lower id than one already committed, and would never be
        billed if a close used the higher one. A SHARE lock on the events table (in its own
        short transaction) waits for the inserting transactions in flight and holds new ones
        back while the counters are read; later inserts get higher ids. SQLite: the close's
        transaction holds the write lock, so nothing commits meanwhile."""
        if conn.dialect.name != "postgresql":
            return repo.read_snapshot(conn, rate_keys, check_keys, cover)  # the same transaction
        with self.engine.begin() as locked:
            locked.exec_driver_sql("SET LOCAL lock_timeout = '60s'")
            locked.exec_driver_sql("LOCK TABLE usage_event IN SHARE MODE")
            return repo.read_snapshot(locked, rate_keys, check_keys)

    def counts_for(self, sub, plan: Plan, period: Period, start: datetime, end: datetime, snap: repo.Snapshot,
                   cover: dict[str, list[SubscriptionRow]], zones: dict[str, str]) -> bool:
        """Can the counters tell late events for this window (see ``usage.late_detectable``)?"""
        if not self.use_counters:
            return False
        mine = cover.get(sub.customer_id, [])
        if sub not in mine:
            return False

        def cycle_of(other: SubscriptionRow) -> BillingCycle:
            return cycle_for(other, self.catalog.get(other.plan_id, other.plan_version),
                             zones.get(other.customer_id, "UTC"))

        alone = alone_in_period(sub, period, mine, cycle_of)
        return late_detectable(plan, (start, end), period, alone, snap.coverage.get(sub.customer_id) == mine,
                               snap.stale)

    def _rate_jobs(self, conn, jobs: list[_Job], snap: repo.Snapshot, cover: dict[str, list[SubscriptionRow]],
                   zones: dict[str, str], result: CloseResult) -> list[tuple[_Job, RatedInvoice]]:
        """Rate the due windows (``invoicing.windows``), with the usage from the snapshot's
        counters where they are exact for the window (``invoicing.usage``)."""
        windows = [Window(j.sub, j.plan, j.period, j.window_start, j.window_end, j.window_end,
                          "arrears" if j.plan.billing.in_advance else "whole") for j in jobs]
        job_of = {(j.sub.id, j.period.start): j for j in jobs}
        countable: dict[int, bool] = {}

        def from_counters(window: Window) -> tuple[dict[str, MeterTotals], Decimal] | None:
            # ``window.plan``: the plan the window is rated on (a contract's overrides applied)
            job, plan = job_of[(window.sub.id, window.period.start)], window.plan
            if not self.counts_for(job.sub, plan, job.period, job.window_start, job.window_end, snap, cover,
                                   zones):
                return None
            rows = snap.counters.get(period_key(job.sub.customer_id, job.period))
            job.events = period_events(rows)
            if id(plan) not in countable:  # catalog plans and effective plans live as long as the close
                countable[id(plan)] = plan_is_countable(plan)
            found = counter_usage(plan, job.period, rows) if countable[id(plan)] else None
            if found is None:
                return None
            result.rated_from_counters += 1
            return found.usage, found.provider_cost

        rated = rate_windows(conn, windows, snap.watermark, from_counters=from_counters, plans=self.catalog.get,
                             grants=thresholds.closing_grants(conn, jobs))
        advance.rate_ahead(conn, jobs, lambda job: cycle_for(job.sub, job.plan, job.timezone))
        out = [(job, r.invoice) for job, r in zip(jobs, rated)]
        out.sort(key=lambda pair: (pair[0].sub.id, pair[0].period.start))
        return out

    def rerate(self, conn, sub, plan, period, start, end, watermark, grants) -> RatedInvoice:
        """Rate the period again on the ledger up to ``watermark``; ``grants``: (grant,
        micro-units this period may draw: what is left now plus what the period already drew).
        Advance billing: its arrears part only (its advance fees are never re-rated)."""
        window = Window(sub, plan, period, start, end, end, "arrears" if plan.billing.in_advance else "whole")
        return rate_windows(conn, [window], watermark, grants={sub.customer_id: grants},
                            plans=self.catalog.get)[0].invoice

    def _record_burns(self, conn, ids: list[int], burns: list[dict], lines: list[list[dict]]) -> None:
        rows = []
        for invoice_id, used in zip(ids, burns):
            for grant_id, amount in used.items():
                if grant_id.startswith("plan:"):
                    continue  # plan credits are regenerated each period, not stored grants
                rows.append({"grant_id": grant_id, "invoice_id": invoice_id, "amount_micro": to_micro(amount)})
        adjusted = {ln["key"] for lines_ in lines for ln in lines_ if ln["kind"] == LineKind.ADJUSTMENT}
        grant_currency = repo.grant_currencies(conn, adjusted) if adjusted else {}
        for invoice_id, invoice_lines in zip(ids, lines):
            for line in invoice_lines:  # credit drawn (or returned) by adjustments
                if line["kind"] == LineKind.ADJUSTMENT and line["key"] in grant_currency:
                    scale = 10 ** (6 - minor_units(grant_currency[line["key"]]))
                    rows.append({"grant_id": line["key"], "invoice_id": invoice_id,
                                 "amount_micro": -line["amount_minor"] * scale})
        repo.insert_burns(conn, rows)

    @staticmethod
    def _finalize(docs: list[dict], numbers: list[int], prefix: str, now: datetime) -> None:
        """draft -> finalized (documents not written yet): a gap-free number, in the same
        transaction that writes the document."""
        for doc, number in zip(docs, numbers):
            status = lifecycle.next_status(doc["kind"], doc["status"], Action.FINALIZE)
            doc.update(status=status.value, number=f"{prefix}-{number:06d}", finalized_at=now)

    # ------------------------------------------------------------- state changes
    # (the rules live in invoicing.lifecycle; each returns the document afterwards)
    def mark_paid(self, invoice_id: int, at: datetime) -> Invoice:
        return lifecycle.apply(self.engine, invoice_id, Action.PAY, at).invoice

    def void(self, invoice_id: int, at: datetime) -> Invoice:
        return lifecycle.apply(self.engine, invoice_id, Action.VOID, at).invoice

    def mark_uncollectible(self, invoice_id: int, at: datetime) -> Invoice:
        return lifecycle.apply(self.engine, invoice_id, Action.MARK_UNCOLLECTIBLE, at).invoice

    def mark_payment_failed(self, invoice_id: int, at: datetime) -> Invoice:
        return lifecycle.apply(self.engine, invoice_id, Action.PAYMENT_FAILED, at).invoice

    # -------------------------------------------------------------------- reads
    def get(self, invoice_id: int) -> tuple[Invoice, list[InvoiceLineRow]]:
        with Session(self.engine) as s:
            inv = s.get(Invoice, invoice_id)
            if inv is None:
                raise BillingError(f"unknown invoice {invoice_id}", code=ErrorCode.INVOICE_NOT_FOUND)
            lines = list(s.exec(sqlmodel.select(InvoiceLineRow).where(InvoiceLineRow.invoice_id == invoice_id)
                                .order_by(InvoiceLineRow.position)).all())
            return inv, lines

    def list(self, customer_id: str | None = None, status: str | None = None, limit: int = 1000) -> list[Invoice]:
        query = sqlmodel.select(Invoice)
        if customer_id:
            query = query.where(Invoice.customer_id == customer_id)
        if status:
            query = query.where(Invoice.status == status)
        with Session(self.engine) as s:
            return list(s.exec(query.order_by(Invoice.id).limit(limit)).all())


def invoice_json(inv: Invoice, lines: list[InvoiceLineRow]) -> dict:
    cur = inv.currency
    return {
        "id": inv.id, "number": inv.number, "kind": inv.kind, "status": inv.status, "customer": inv.customer_id,
        "currency": cur, "plan": {"id": inv.plan_id, "version": inv.plan_version},
        "period": {"start": inv.period_start.isoformat().replace("+00:00", "Z"),
                   "end": inv.period_end.isoformat().replace("+00:00", "Z")},
        "lines": [{"description": ln.description, "kind": ln.kind, "key": ln.key, "quantity": ln.quantity,
                   "unit_price": ln.unit_price, "amount": f"{from_minor(ln.amount_minor, cur):f}",
                   "service_period": {"start": ln.service_start.isoformat().replace("+00:00", "Z"),
                                      "end": ln.service_end.isoformat().replace("+00:00", "Z")},
                   "billed_in_advance": bool(ln.billed_in_advance)}
                  for ln in lines],
        "total": f"{from_minor(inv.total_minor, cur):f}",
        "provider_cost": dec_str(Decimal(join(inv.provider_cost_carry, inv.provider_cost_pico)) / PICO),
        "corrects_invoice_id": inv.corrects_invoice_id,
        "finalized_at": inv.finalized_at.isoformat() if inv.finalized_at else None,
        "paid_at": inv.paid_at.isoformat() if inv.paid_at else None,
    }
