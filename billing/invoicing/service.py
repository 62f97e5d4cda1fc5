"""Closing billing periods into invoices, through the pure rating engine (no second
implementation). One close is one transaction over one ledger snapshot (``watermark``:
the highest event id it saw), so re-running it is idempotent and concurrent closers
cannot double-bill (each period's invoice has a unique ``dedupe_key``).

Late events: after an invoice is finalized it never changes. When events arrive later
for its period (or disputes reverse its outcomes), the period is re-rated at the next
close; a net increase lands as ``adjustment`` lines on the subscription's next invoice,
a net decrease is issued as a credit note (negative lines) against the original.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache

import sqlmodel
from sqlalchemy import Engine, update
from sqlmodel import Session

from billing.catalog import Catalog, Plan
from billing.errors import BillingError, ErrorCode
from billing.invoicing import repository as repo
from billing.ledger.aggregate_sql import aggregate_window, max_event_id
from billing.ledger.counters import MICRO, to_micro
from billing.ledger.models import Invoice, InvoiceLineRow, Subscription
from billing.ledger.types import to_us
from billing.money import dec_str, minor_units, round_line
from billing.rating.engine import RatingInput, rate_period
from billing.rating.periods import BillingCycle, Period
from billing.rating.types import CreditGrant, RatedInvoice

PICO = Decimal(10) ** 12


@dataclass
class CloseResult:
    watermark: int = 0
    invoices: list[int] = field(default_factory=list)
    credit_notes: list[int] = field(default_factory=list)
    adjusted_periods: int = 0

    def to_json(self) -> dict:
        return {"watermark": self.watermark, "invoices": self.invoices, "credit_notes": self.credit_notes,
                "adjusted_periods": self.adjusted_periods}


@dataclass
class _Job:
    sub: Subscription
    plan: Plan
    period: Period
    window_start: datetime
    window_end: datetime
    timezone: str


def _minor(amount: Decimal, currency: str) -> int:
    return int(round_line(amount, currency).scaleb(minor_units(currency)))


def _from_minor(value: int, currency: str) -> Decimal:
    return Decimal(value).scaleb(-minor_units(currency))


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


def due_windows(sub: Subscription, plan: Plan, timezone: str, as_of: datetime) -> list[tuple[Period, datetime, datetime]]:
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
    def __init__(self, engine: Engine, catalog: Catalog, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.engine = engine
        self.catalog = catalog
        self.clock = clock

    # ------------------------------------------------------------------ closing
    def close(self, as_of: datetime, *, progress: Callable[[int], None] | None = None) -> CloseResult:
        """Finalize every subscription period that ended by ``as_of`` (idempotent)."""
        if as_of.tzinfo is None:
            raise BillingError("as_of must include a timezone", code=ErrorCode.VALIDATION)
        now = self.clock()
        result = CloseResult()
        watermark = self._settled_watermark()
        with self.engine.begin() as conn:
            result.watermark = watermark
            subs = repo.subscriptions_started_before(conn, as_of)
            zones = repo.customer_timezones(conn, {s.customer_id for s in subs})
            existing = repo.invoice_keys(conn, [s.id for s in subs])
            jobs: list[_Job] = []
            for sub in subs:
                plan = self.catalog.get(sub.plan_id, sub.plan_version)
                tz = zones.get(sub.customer_id, "UTC")
                for period, start, end in due_windows(sub, plan, tz, as_of):
                    if _invoice_key(sub.id, period) not in existing:
                        jobs.append(_Job(sub, plan, period, start, end, tz))
            rated = self._rate_jobs(conn, jobs, watermark)
            newest: dict[int, int] = {}  # subscription -> index in `rated` of its latest new invoice
            for i, (job, _) in enumerate(rated):
                newest[job.sub.id] = i
            # an increase waits for the subscription's next invoice unless it can be billed now
            billable_now = {s.id for s in subs if s.id in newest or (s.ended_at is not None and s.ended_at <= as_of)}
            # grant credit drawn by this run's new invoices (not yet stored as burns)
            drawn_now: dict[str, int] = defaultdict(int)
            for _, inv in rated:
                for grant_id, amount in inv.credits_used.items():
                    if not grant_id.startswith("plan:"):
                        drawn_now[grant_id] += to_micro(amount)
            adjustments, credit_notes = self._late_changes(conn, subs, zones, watermark, existing, billable_now,
                                                           drawn_now)
            result.adjusted_periods = len(adjustments) + len(credit_notes)
            docs, doc_lines, burns = [], [], []
            for i, (job, inv) in enumerate(rated):
                lines = [_line_row(n, ln, inv, job) for n, ln in enumerate(inv.lines)]
                extra = [a for a in adjustments if newest.get(a[0]) == i]
                for _, adj_lines in extra:
                    lines.extend(adj_lines)
                for pos, row in enumerate(lines):
                    row["position"] = pos
                total = sum(r["amount_minor"] for r in lines)
                docs.append(_invoice_row(job, inv, total, watermark, now))
                doc_lines.append(lines)
                burns.append(inv.credits_used)
            # adjustments for subscriptions with no new invoice: ended subscriptions get a
            # standalone invoice now; active ones wait for their next period's invoice
            waiting = [a for a in adjustments if a[0] not in newest]
            for sub_id, adj_lines in waiting:
                sub = next(s for s in subs if s.id == sub_id)
                if sub.ended_at is None or sub.ended_at > as_of:
                    continue
                plan = self.catalog.get(sub.plan_id, sub.plan_version)
                for pos, row in enumerate(adj_lines):
                    row["position"] = pos
                docs.append({**_doc_base(sub, plan, adj_lines[0]["service_start"], adj_lines[0]["service_end"], now,
                                         watermark),
                             "dedupe_key": f"adj:{sub_id}:{to_us(adj_lines[0]['service_start'])}:{watermark}",
                             "total_minor": sum(r["amount_minor"] for r in adj_lines)})
                doc_lines.append(adj_lines)
                burns.append({})
            self._finalize(docs, repo.take_numbers(conn, "INV", len(docs)), "INV", now)
            ids = repo.insert_invoices(conn, docs, doc_lines)
            self._record_burns(conn, ids, burns, doc_lines)
            note_docs, note_lines = [], []
            for sub_id, original_id, lines in credit_notes:
                sub = next(s for s in subs if s.id == sub_id)
                plan = self.catalog.get(sub.plan_id, sub.plan_version)
                for pos, row in enumerate(lines):
                    row["position"] = pos
                note_docs.append({**_doc_base(sub, plan, lines[0]["service_start"], lines[0]["service_end"], now,
                                              watermark),
                                  "kind": "credit_note", "corrects_invoice_id": original_id,
                                  "dedupe_key": f"cn:{original_id}:{watermark}",
                                  "total_minor": sum(r["amount_minor"] for r in lines)})
                note_lines.append(lines)
            self._finalize(note_docs, repo.take_numbers(conn, "CN", len(note_docs)), "CN", now)
            note_ids = repo.insert_invoices(conn, note_docs, note_lines)
            self._record_burns(conn, note_ids, [{} for _ in note_ids], note_lines)
            result.invoices = ids
            result.credit_notes = note_ids
            if progress:
                progress(len(jobs))
        return result

    def _settled_watermark(self) -> int:
        """The highest event id such that every lower id is committed (or rolled back).

        PostgreSQL hands out ids when a row is inserted, not when it commits: an ingestion
        still in flight can hold a lower id than one already committed, and would never be
        billed if a close used the higher one. A SHARE lock on the events table waits for
        the inserting transactions in flight (and holds new ones back only for this short
        transaction); later inserts get higher ids. SQLite writers are serialized anyway."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL lock_timeout = '60s'")
                conn.exec_driver_sql("LOCK TABLE usage_event IN SHARE MODE")
            return max_event_id(conn)

    def _rate_jobs(self, conn, jobs: list[_Job], watermark: int) -> list[tuple[_Job, RatedInvoice]]:
        groups: dict[tuple, list[_Job]] = defaultdict(list)
        for job in jobs:
            groups[(job.plan.plan, job.plan.version, job.window_start, job.window_end)].append(job)
        seats = repo.seat_histories(conn, [j.sub.id for j in jobs])
        grants = repo.grants(conn, [j.sub.customer_id for j in jobs])
        out: list[tuple[_Job, RatedInvoice]] = []
        for (_, _, start, end), members in groups.items():
            customers = sorted({j.sub.customer_id for j in members})
            usage, costs = aggregate_window(conn, members[0].plan, customers, to_us(start), to_us(end), watermark)
            for job in members:
                cid = job.sub.customer_id
                inv = rate_period(RatingInput(
                    job.plan, cid, job.period, usage[cid], seats.get(job.sub.id, ()),
                    _grant_inputs(grants.get(cid, ()), job.plan.currency),
                    active_from=job.window_start if job.window_start > job.period.start else None,
                    active_until=job.window_end if job.window_end < job.period.end else None,
                    trial_end=job.sub.trial_end, provider_cost=costs.get(cid, Decimal(0))))
                out.append((job, inv))
                # grants drawn here are not available to the customer's next job in this run
                if inv.credits_used:
                    grants[cid] = [(g, bal - to_micro(inv.credits_used.get(g.id, Decimal(0))))
                                   for g, bal in grants.get(cid, ())]
        out.sort(key=lambda pair: (pair[0].sub.id, pair[0].period.start))
        return out

    def _late_changes(self, conn, subs: list[Subscription], zones: dict[str, str], watermark: int,
                      existing_keys: set[str], billable_now: set[int], drawn_now: dict[str, int]):
        """Re-rate finalized periods that got late events; return (adjustments, credit notes).

        A period is marked re-checked up to ``watermark`` only when its difference is billed
        in this run: a net increase for a subscription not in ``billable_now`` (no new invoice
        to carry it yet) stays pending, and is found again by the next close. ``drawn_now``
        (grant id -> micro-units drawn in this run, not yet stored) is kept up to date so
        re-rated periods never draw credit that is already spent."""
        adjustments: list[tuple[int, list[dict]]] = []
        credit_notes: list[tuple[int, int, list[dict]]] = []
        by_id = {s.id: s for s in subs}
        finals = repo.finalized_invoices(conn, list(by_id))
        marks = repo.recheck_marks(conn, [f.id for f in finals])
        for inv in finals:
            seen = max(inv.ledger_watermark, marks.get(inv.id, 0))
            if seen >= watermark:
                continue
            sub = by_id[inv.subscription_id]
            plan = self.catalog.get(sub.plan_id, sub.plan_version)
            reach = max((m.disputes.window_days for m in plan.meters if m.disputes), default=0) * 86_400_000_000
            late = repo.has_late_events(conn, sub.customer_id, seen, to_us(inv.period_start),
                                        to_us(inv.period_end) + reach)
            if not late:
                repo.set_recheck(conn, inv.id, watermark)
                continue
            tz = zones.get(sub.customer_id, "UTC")
            period = cycle_for(sub, plan, tz).period_containing(inv.period_start)
            window_start, window_end = inv.period_start, inv.period_end
            billed: dict[str, int] = defaultdict(int)
            names: dict[str, str] = {f.key: f.name or f.key for f in plan.fees}
            names.update({c.key: c.name or c.key for c in plan.charges})
            for key, amount, description, _kind in repo.billed_lines_for_period(conn, sub.id, window_start, window_end):
                billed[key] += amount
                names.setdefault(key, description)
            grants = repo.grants(conn, [sub.customer_id]).get(sub.customer_id, [])
            scale = 10 ** (6 - minor_units(plan.currency))
            # the credit this period drew so far (its credit lines, adjustments included)
            earlier = {g.id: -billed[g.id] * scale for g, _ in grants if billed.get(g.id)}
            available = [(g, bal - drawn_now.get(g.id, 0) + earlier.get(g.id, 0)) for g, bal in grants]
            rerated = self._rerate(conn, sub, plan, period, window_start, window_end, watermark, available)
            fresh: dict[str, int] = defaultdict(int)
            for ln in rerated.lines:
                fresh[ln.key] += _minor(ln.amount, plan.currency)
                names.setdefault(ln.key, ln.description)
            diffs = {k: fresh.get(k, 0) - billed.get(k, 0) for k in set(fresh) | set(billed)}
            diffs = {k: v for k, v in sorted(diffs.items()) if v}
            if not diffs:
                repo.set_recheck(conn, inv.id, watermark)
                continue
            label = f"{inv.period_start.date().isoformat()}..{inv.period_end.date().isoformat()}"
            rows = [{"kind": "adjustment", "key": k, "description": f"Adjustment {label}: {names.get(k, k)}",
                     "quantity": "1", "unit_price": None, "amount_minor": v, "service_start": window_start,
                     "service_end": window_end} for k, v in diffs.items()]
            if sum(diffs.values()) < 0:
                credit_notes.append((sub.id, inv.id, rows))
            elif sub.id in billable_now:
                adjustments.append((sub.id, rows))
            else:
                continue  # pending: re-rated again (with any newer events) by the next close
            repo.set_recheck(conn, inv.id, watermark)
            for grant, _ in grants:  # credit drawn (or given back) by these lines
                drawn_now[grant.id] -= diffs.get(grant.id, 0) * scale
        return adjustments, credit_notes

    def _rerate(self, conn, sub, plan, period, start, end, watermark, grants) -> RatedInvoice:
        """Rate the period again on the current ledger; ``grants``: (grant, micro-units this
        period may draw: what is left now plus what the period already drew)."""
        usage, cost = aggregate_window(conn, plan, [sub.customer_id], to_us(start), to_us(end), watermark)
        seats = repo.seat_histories(conn, [sub.id]).get(sub.id, ())
        return rate_period(RatingInput(
            plan, sub.customer_id, period, usage[sub.customer_id], seats, _grant_inputs(grants, plan.currency),
            active_from=start if start > period.start else None, active_until=end if end < period.end else None,
            trial_end=sub.trial_end, provider_cost=cost.get(sub.customer_id, Decimal(0))))

    def _record_burns(self, conn, ids: list[int], burns: list[dict], lines: list[list[dict]]) -> None:
        rows = []
        for invoice_id, used, invoice_lines in zip(ids, burns, lines):
            for grant_id, amount in used.items():
                if grant_id.startswith("plan:"):
                    continue  # plan credits are regenerated each period, not stored grants
                rows.append({"grant_id": grant_id, "invoice_id": invoice_id, "amount_micro": to_micro(amount)})
        adjusted = {ln["key"] for lines_ in lines for ln in lines_ if ln["kind"] == "adjustment"}
        grant_currency = repo.grant_currencies(conn, adjusted)
        for invoice_id, invoice_lines in zip(ids, lines):
            for line in invoice_lines:  # credit drawn (or returned) by adjustments
                if line["kind"] == "adjustment" and line["key"] in grant_currency:
                    scale = 10 ** (6 - minor_units(grant_currency[line["key"]]))
                    rows.append({"grant_id": line["key"], "invoice_id": invoice_id,
                                 "amount_micro": -line["amount_minor"] * scale})
        repo.insert_burns(conn, rows)

    @staticmethod
    def _finalize(docs: list[dict], numbers: list[int], prefix: str, now: datetime) -> None:
        """draft -> finalized: a gap-free number, in the same transaction that writes the document."""
        for doc, number in zip(docs, numbers):
            doc.update(status="finalized", number=f"{prefix}-{number:06d}", finalized_at=now)

    # ------------------------------------------------------------- state changes
    def _transition(self, invoice_id: int, allowed: tuple[str, ...], **values) -> Invoice:
        with Session(self.engine, expire_on_commit=False) as s:
            inv = s.get(Invoice, invoice_id)
            if inv is None:
                raise BillingError(f"unknown invoice {invoice_id}", code=ErrorCode.INVOICE_NOT_FOUND)
            target = values.get("status")
            if target and inv.status == target:
                return inv  # idempotent
            if inv.status not in allowed:
                raise BillingError(f"invoice {inv.number or inv.id} is {inv.status}; cannot move to "
                                   f"{target or 'past due'}", code=ErrorCode.INVOICE_STATE)
            for k, v in values.items():
                setattr(inv, k, v)
            s.add(inv)
            s.commit()
            return inv

    def mark_paid(self, invoice_id: int, at: datetime) -> Invoice:
        return self._transition(invoice_id, ("finalized",), status="paid", paid_at=at)

    def void(self, invoice_id: int, at: datetime) -> Invoice:
        return self._transition(invoice_id, ("finalized", "draft"), status="void", voided_at=at)

    def mark_payment_failed(self, invoice_id: int, at: datetime) -> Invoice:
        with Session(self.engine) as s:
            inv = s.get(Invoice, invoice_id)
            if inv is not None and (inv.status != "finalized" or inv.payment_failed_at is not None):
                return inv  # paid stays paid; the first failure starts the dunning clock
        return self._transition(invoice_id, ("finalized",), payment_failed_at=at)

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
                   "unit_price": ln.unit_price, "amount": f"{_from_minor(ln.amount_minor, cur):f}",
                   "service_period": {"start": ln.service_start.isoformat().replace("+00:00", "Z"),
                                      "end": ln.service_end.isoformat().replace("+00:00", "Z")}}
                  for ln in lines],
        "total": f"{_from_minor(inv.total_minor, cur):f}",
        "provider_cost": dec_str(Decimal(inv.provider_cost_pico) / PICO),
        "corrects_invoice_id": inv.corrects_invoice_id,
        "finalized_at": inv.finalized_at.isoformat() if inv.finalized_at else None,
        "paid_at": inv.paid_at.isoformat() if inv.paid_at else None,
    }


def _invoice_key(subscription_id: int, period: Period) -> str:
    return f"inv:{subscription_id}:{to_us(period.start)}"


def _grant_inputs(grants, currency: str) -> list[CreditGrant]:
    out = []
    for g, balance in grants:
        if balance <= 0:
            continue
        out.append(CreditGrant(g.id, Decimal(balance) / MICRO, g.name, g.expires_at, g.effective_at,
                               tuple(g.applies_to.split(",")) if g.applies_to else None))
    return out


def _line_row(position: int, ln, inv: RatedInvoice, job: "_Job") -> dict:
    return {"position": position, "kind": ln.kind, "key": ln.key, "description": ln.description[:500],
            "quantity": dec_str(ln.quantity), "unit_price": None if ln.unit_price is None else dec_str(ln.unit_price),
            "amount_minor": _minor(ln.amount, inv.currency), "service_start": job.window_start,
            "service_end": job.window_end}


def _doc_base(sub: Subscription, plan: Plan, start: datetime, end: datetime, now: datetime, watermark: int) -> dict:
    return {"kind": "invoice", "status": "draft", "customer_id": sub.customer_id, "subscription_id": sub.id,
            "plan_id": plan.plan, "plan_version": plan.version, "currency": plan.currency, "period_start": start,
            "period_end": end, "provider_cost_pico": 0, "ledger_watermark": watermark, "created_at": now,
            "corrects_invoice_id": None}


def _invoice_row(job: _Job, inv: RatedInvoice, total_minor: int, watermark: int, now: datetime) -> dict:
    return {**_doc_base(job.sub, job.plan, job.window_start, job.window_end, now, watermark),
            "dedupe_key": _invoice_key(job.sub.id, job.period), "total_minor": total_minor,
            "provider_cost_pico": int((inv.provider_cost * PICO).to_integral_value())}
