"""SQL for invoicing: the close lock, existing invoices, bulk inserts, numbering,
corrections (grants and seat histories: ``store.grants_and_seats``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Connection, insert, select, update

from billing.invoicing.lifecycle import BILLED_STATUSES
from billing.invoicing.usage import SubscriptionRow
from billing.store.aggregate_sql import max_event_id, run
from billing.ledger.counters import ALL_EVENTS
from billing.store.driver_rows import datetime_reader, driver_rows
from billing.store.models import (
    CreditGrantRow, Customer, Invoice, InvoiceLineRow, InvoiceRecheck, NumberSequence)
from billing.ledger.recount import counters_stale
from billing.store.wide import join

_CHUNK = 500
# A document's lines stay billed whatever happens to its payment: voiding forgives what it
# asked, it does not un-bill the events (a late event for the period bills only itself).
BILLED = BILLED_STATUSES


# The close's PostgreSQL advisory lock, in the two-key space (which never meets the
# one-key locks of quota reservations): ("bill", 1).
CLOSE_LOCK = (0x62696C6C, 1)


def lock_closes(conn: Connection) -> None:
    """Take the ledger's close lock for the rest of the transaction, as its first statement:
    closes run one at a time, and one that waited reads (after this returns) everything the
    previous one committed. SQLite: the transaction began with BEGIN IMMEDIATE, so it holds
    the write lock already."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s, %s)", CLOSE_LOCK)


def _chunks(items: Sequence, size: int = _CHUNK):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def all_subscriptions(conn: Connection) -> list[SubscriptionRow]:
    """Every subscription, in id order."""
    dt = datetime_reader(conn)
    return [SubscriptionRow(i, c, p, v, dt(s), dt(a), dt(e), dt(t)) for i, c, p, v, s, a, e, t in driver_rows(
        conn, "SELECT id, customer_id, plan_id, plan_version, started_at, anchor_at, ended_at, trial_end "
              "FROM subscription ORDER BY id")]


def coverage(subscriptions: Iterable[SubscriptionRow]) -> dict[str, list[SubscriptionRow]]:
    """customer -> its subscriptions (in id order)."""
    out: dict[str, list[SubscriptionRow]] = defaultdict(list)
    for sub in subscriptions:
        out[sub.customer_id].append(sub)
    return dict(out)


def customer_timezones(conn: Connection, ids: Iterable[str]) -> dict[str, str]:
    ids = set(ids)
    if len(ids) > 5 * _CHUNK:  # most customers: one read of them all
        return {c: tz for c, tz in driver_rows(conn, "SELECT id, timezone FROM customer") if c in ids}
    out: dict[str, str] = {}
    for part in _chunks(sorted(ids)):
        out.update(dict(conn.execute(select(Customer.id, Customer.timezone).where(Customer.id.in_(part))).all()))
    return out


def customer_thresholds(conn: Connection) -> dict[str, Decimal]:
    """customer -> its own invoicing threshold (``invoice_when_due_reaches``), where set."""
    t = Customer.__table__.c
    return {c: Decimal(v) for c, v in conn.execute(select(t.id, t.invoice_when_due_reaches)
                                                   .where(t.invoice_when_due_reaches.is_not(None)))}


def threshold_invoiced(conn: Connection, subscription_ids: Sequence[int]) -> set[tuple[int, str]]:
    """(subscription, ``thr:<subscription>:<period start>:`` prefix) of every window of these
    subscriptions that has threshold invoices (whatever its plan or customer says now)."""
    out: set[tuple[int, str]] = set()
    t = Invoice.__table__.c
    for part in _chunks(sorted(set(subscription_ids))):
        for sid, key in conn.execute(select(t.subscription_id, t.dedupe_key)
                                     .where(t.subscription_id.in_(part), t.dedupe_key.startswith("thr:"))):
            out.add((sid, key.rsplit(":", 1)[0] + ":"))
    return out


def invoice_keys(conn: Connection, subscription_ids: Sequence[int]) -> set[str]:
    out: set[str] = set()
    for part in _chunks(list(subscription_ids)):
        out.update(conn.execute(select(Invoice.dedupe_key).where(Invoice.subscription_id.in_(part))).scalars())
    return out


def take_numbers(conn: Connection, name: str, count: int) -> list[int]:
    """Reserve ``count`` consecutive document numbers atomically."""
    if count <= 0:
        return []
    table = NumberSequence.__table__
    result = conn.execute(update(table).where(table.c.name == name).values(value=table.c.value + count)
                          .returning(table.c.value)).scalar()
    if result is None:
        conn.execute(insert(table).values(name=name, value=0))
        result = conn.execute(update(table).where(table.c.name == name).values(value=table.c.value + count)
                              .returning(table.c.value)).scalar()
    return list(range(result - count + 1, result + 1))


@lru_cache(maxsize=4096)
def _db_datetime(pg: bool, value: datetime):
    """Bind a datetime the way the ORM stores it (SQLite: naive UTC text with microseconds)."""
    value = value.astimezone(UTC)
    return value if pg else value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _bulk_insert(conn: Connection, table: str, rows: list[dict], key: str | None = None) -> dict:
    """Insert rows (dicts with the same keys) through the driver; with ``key`` (a unique
    column), return {row[key]: new id}. SQLite: one executemany (the transaction holds the
    write lock, so the ids above the previous maximum are these rows'); PostgreSQL: COPY."""
    if not rows:
        return {}
    pg = conn.dialect.name == "postgresql"
    columns = list(rows[0])
    dated = [i for i, c in enumerate(columns)
             if isinstance(next((r[c] for r in rows if r[c] is not None), None), datetime)]
    get = itemgetter(*columns) if len(columns) > 1 else (lambda r: (r[columns[0]],))

    def values(row: dict) -> list:
        out = list(get(row))
        for i in dated:
            if out[i] is not None:
                out[i] = _db_datetime(pg, out[i])
        return out

    names = ", ".join(columns)
    cursor = conn.connection.driver_connection.cursor()
    try:
        if pg:
            with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(values(row))
            if not key:
                return {}
            cursor.execute(f"SELECT id, {key} FROM {table} WHERE {key} = ANY(%s)", ([r[key] for r in rows],))
            return {k: i for i, k in cursor.fetchall()}
        before = 0
        if key:
            cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")
            before = cursor.fetchone()[0]
        cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({','.join(['?'] * len(columns))})",
                           [values(r) for r in rows])
        if not key:
            return {}
        cursor.execute(f"SELECT id, {key} FROM {table} WHERE id > ?", (before,))
        return {k: i for i, k in cursor.fetchall()}
    finally:
        cursor.close()


def insert_invoices(conn: Connection, invoices: list[dict], lines: list[list[dict]]) -> list[int]:
    """Insert invoices and their lines; return the invoice ids (same order)."""
    if not invoices:
        return []
    by_key = _bulk_insert(conn, "invoice", invoices, key="dedupe_key")
    ids = [by_key[doc["dedupe_key"]] for doc in invoices]
    flat = []
    for invoice_id, invoice_lines in zip(ids, lines):
        for line in invoice_lines:
            line["invoice_id"] = invoice_id
            line.setdefault("stripe_line_id", None)
            line.setdefault("billed_in_advance", False)
            flat.append(line)
    _bulk_insert(conn, "invoice_line", flat)
    return ids


def insert_burns(conn: Connection, burns: list[dict]) -> None:
    _bulk_insert(conn, "credit_burn", burns)


@dataclass(frozen=True)
class FinalRow:
    id: int
    subscription_id: int
    customer_id: str
    period_start: datetime
    period_end: datetime
    ledger_watermark: int


def finalized_invoices(conn: Connection, subscription_ids: Sequence[int]) -> list[FinalRow]:
    """The finalized period invoices (``inv:`` keys): one per billed period, so each period is
    re-checked for late events once (standalone adjustment invoices bill the same period)."""
    t = Invoice.__table__.c
    out: list[FinalRow] = []
    for part in _chunks(list(subscription_ids)):
        rows = conn.execute(select(t.id, t.subscription_id, t.customer_id, t.period_start, t.period_end,
                                   t.ledger_watermark)
                            .where(t.subscription_id.in_(part), t.kind == "invoice",
                                   t.status.in_(BILLED), t.corrects_invoice_id.is_(None),
                                   t.dedupe_key.startswith("inv:")))
        out.extend(FinalRow(*r) for r in rows)
    out.sort(key=lambda row: row.id)  # corrections are found (and numbered) in a fixed order
    return out


def recheck_marks(conn: Connection, invoice_ids: Sequence[int]) -> dict[int, tuple[int, int | None]]:
    """invoice id -> (watermark, period event count or None) of its last re-check."""
    out: dict[int, tuple[int, int | None]] = {}
    t = InvoiceRecheck.__table__.c
    for part in _chunks(list(invoice_ids)):
        out.update({i: (w, n) for i, w, n in conn.execute(select(t.invoice_id, t.watermark, t.events)
                                                          .where(t.invoice_id.in_(part)))})
    return out


def set_recheck(conn: Connection, invoice_id: int, watermark: int, events: int | None) -> None:
    table = InvoiceRecheck.__table__
    done = conn.execute(update(table).where(table.c.invoice_id == invoice_id)
                        .values(watermark=watermark, events=events)).rowcount
    if not done:
        conn.execute(insert(table).values(invoice_id=invoice_id, watermark=watermark, events=events))


def insert_rechecks(conn: Connection, rows: list[dict]) -> None:
    """``{"invoice_id", "watermark", "events"}`` rows for new invoices."""
    _bulk_insert(conn, "invoice_recheck", rows)


def last_corrections(conn: Connection, invoice_ids: Sequence[int]) -> dict[int, int]:
    """invoice id -> the generation of its latest correction (absent: never corrected);
    through the driver, 5,000 invoices a statement."""
    out: dict[int, int] = {}
    for part in _chunks(sorted(invoice_ids), 10 * _CHUNK):
        out.update({int(i): int(g) for i, g in driver_rows(
            conn, f"SELECT corrected_invoice_id, MAX(generation) FROM invoice_correction WHERE corrected_invoice_id "
                  f"IN ({','.join(['?'] * len(part))}) GROUP BY corrected_invoice_id", part)})
    return out


def insert_corrections(conn: Connection, rows: list[dict]) -> None:
    """``{"corrected_invoice_id", "generation", "document_id"}`` rows, in key order; a
    correction written twice violates the primary key."""
    _bulk_insert(conn, "invoice_correction",
                 sorted(rows, key=lambda r: (r["corrected_invoice_id"], r["generation"])))


# ------------------------------------------------------------------ ledger snapshot

@dataclass
class Snapshot:
    """What one close reads of the ledger at one instant: the watermark (highest event id,
    every lower one settled), whether the counters are stale, every subscription, and the
    counters it asked for: (customer, period start) -> meter -> (period_end, units_micro,
    events, cost_pico)."""

    watermark: int
    stale: bool
    coverage: dict[str, list[SubscriptionRow]]
    counters: dict[tuple[str, int], dict[str, tuple[int, int, int, int]]]


def read_snapshot(conn: Connection, rate_keys: set[tuple[str, int]], check_keys: set[tuple[str, int]],
                  subscriptions: dict[str, list[SubscriptionRow]] | None = None) -> Snapshot:
    """Call inside a transaction that no ingestion can commit into meanwhile (SQLite's write
    lock; on PostgreSQL a SHARE lock on usage_event taken first). ``rate_keys``: every
    counter of these (customer, period start); ``check_keys``: only their ``*`` rows;
    ``subscriptions``: their ``coverage`` if already read in this transaction (else read here)."""
    watermark = max_event_id(conn)
    stale = counters_stale(conn)
    counters: dict[tuple[str, int], dict[str, tuple[int, int, int, int]]] = {}
    pg = conn.dialect.name == "postgresql"
    ph = "%s" if pg else "?"
    cursor = conn.connection.driver_connection.cursor()
    try:
        for keys, only_all in ((rate_keys, False), (check_keys - rate_keys, True)):
            if not keys:
                continue
            starts = [s for _, s in keys]
            meter = f" AND meter = {ph}" if only_all else ""
            # PostgreSQL: the customers named (a Citus cluster routes the read to their shards)
            who = " AND customer_id = ANY(%s)" if pg else ""
            cursor.execute("SELECT customer_id, meter, period_start, period_end, units_carry, units_micro, events, "
                           f"cost_carry, cost_pico FROM usage_counter WHERE period_start >= {ph} "
                           f"AND period_start <= {ph}{meter}{who}",
                           [min(starts), max(starts), *([ALL_EVENTS] if only_all else []),
                            *([sorted({c for c, _ in keys})] if pg else [])])
            for customer, name, start, end, units_carry, units, events, cost_carry, cost in cursor.fetchall():
                key = (customer, int(start))
                if key in keys:
                    counters.setdefault(key, {})[name] = (int(end), join(units_carry, units), int(events),
                                                          join(cost_carry, cost))
    finally:
        cursor.close()
    return Snapshot(watermark, stale, subscriptions if subscriptions is not None else coverage(all_subscriptions(conn)),
                    counters)


def has_late_events(conn: Connection, customer_id: str, after_id: int, start_us: int, end_us: int) -> bool:
    ph = "%s" if conn.dialect.name == "postgresql" else "?"
    cursor = conn.connection.driver_connection.cursor()
    try:
        run(cursor, f"SELECT 1 FROM usage_event WHERE customer_id = {ph} AND id > {ph} AND ts >= {ph} "
                       f"AND ts < {ph} LIMIT 1", [customer_id, after_id, start_us, end_us])
        return cursor.fetchone() is not None
    finally:
        cursor.close()


def billed_lines_for_period(conn: Connection, subscription_id: int, start: datetime, end: datetime) -> list[tuple]:
    """(key, amount_minor, description, document kind) of every finalized line billing this
    service period of the subscription in arrears (an advance fee invoiced when the period
    started is never re-rated: ``invoicing.advance``)."""
    rows = conn.execute(
        select(InvoiceLineRow.key, InvoiceLineRow.amount_minor, InvoiceLineRow.description, Invoice.kind)
        .join(Invoice, Invoice.id == InvoiceLineRow.invoice_id)
        .where(Invoice.subscription_id == subscription_id, Invoice.status.in_(BILLED),
               InvoiceLineRow.service_start == start, InvoiceLineRow.service_end == end,
               InvoiceLineRow.billed_in_advance.is_(False)))
    return list(rows)


def grant_currencies(conn: Connection, keys: Iterable[str]) -> dict[str, str]:
    keys = [k for k in set(keys) if k]
    out: dict[str, str] = {}
    for part in _chunks(keys):
        out.update(dict(conn.execute(select(CreditGrantRow.id, CreditGrantRow.currency)
                                     .where(CreditGrantRow.id.in_(part))).all()))
    return out


# --------------------------------------------------------------- re-costed periods

def recost_marks(conn: Connection, invoice_ids: Sequence[int]) -> dict[int, int]:
    """invoice id -> marks, of the invoices whose period was re-costed since it was billed
    (``billing.ledger.recost``): the late-event path re-rates them whatever the counts say."""
    from billing.store.models import InvoiceRecost

    t = InvoiceRecost.__table__.c
    out: dict[int, int] = {}
    for part in _chunks(sorted(set(invoice_ids))):
        out.update({i: int(m) for i, m in conn.execute(select(t.invoice_id, t.marks).where(t.invoice_id.in_(part)))})
    return out


def clear_recost(conn: Connection, invoice_id: int, marks: int) -> None:
    """The period was re-rated: drop its mark, unless a re-cost marked it again meanwhile."""
    from sqlalchemy import delete

    from billing.store.models import InvoiceRecost

    t = InvoiceRecost.__table__
    conn.execute(delete(t).where(t.c.invoice_id == invoice_id, t.c.marks == marks))
