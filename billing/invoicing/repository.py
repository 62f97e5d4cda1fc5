"""SQL for invoicing: existing invoices, seat and grant snapshots, bulk inserts, numbering."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from datetime import UTC, datetime

from sqlalchemy import Connection, func, insert, select, update

from billing.ledger.models import (
    CreditBurn, CreditGrantRow, Customer, Invoice, InvoiceLineRow, InvoiceRecheck, NumberSequence, SeatChange,
    Subscription)

_CHUNK = 500


def _chunks(items: Sequence, size: int = _CHUNK):
    for i in range(0, len(items), size):
        yield items[i:i + size]


@dataclass(frozen=True)
class SubscriptionRow:
    """A subscription as invoicing reads it (a plain row, cheap to load by the thousand)."""

    id: int
    customer_id: str
    plan_id: str
    plan_version: int
    started_at: datetime
    anchor_at: datetime
    ended_at: datetime | None
    trial_end: datetime | None


def subscriptions_started_before(conn: Connection, as_of: datetime) -> list[SubscriptionRow]:
    t = Subscription.__table__.c
    rows = conn.execute(select(t.id, t.customer_id, t.plan_id, t.plan_version, t.started_at, t.anchor_at,
                               t.ended_at, t.trial_end).where(t.started_at < as_of).order_by(t.id))
    return [SubscriptionRow(*r) for r in rows]


def customer_timezones(conn: Connection, ids: Iterable[str]) -> dict[str, str]:
    ids = list(set(ids))
    out: dict[str, str] = {}
    for part in _chunks(ids):
        out.update(dict(conn.execute(select(Customer.id, Customer.timezone).where(Customer.id.in_(part))).all()))
    return out


def invoice_keys(conn: Connection, subscription_ids: Sequence[int]) -> set[str]:
    out: set[str] = set()
    for part in _chunks(list(subscription_ids)):
        out.update(conn.execute(select(Invoice.dedupe_key).where(Invoice.subscription_id.in_(part))).scalars())
    return out


def seat_histories(conn: Connection, subscription_ids: Sequence[int]) -> dict[int, list[tuple[datetime, int]]]:
    out: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    for part in _chunks(list(subscription_ids)):
        rows = conn.execute(select(SeatChange.subscription_id, SeatChange.effective_at, SeatChange.seats)
                            .where(SeatChange.subscription_id.in_(part))
                            .order_by(SeatChange.effective_at, SeatChange.id))
        for sid, at, seats in rows:
            out[sid].append((at, seats))
    return out


def grants(conn: Connection, customer_ids: Sequence[str]) -> dict[str, list[tuple[CreditGrantRow, int]]]:
    """customer -> [(grant, remaining micro-units)]."""
    out: dict[str, list[tuple[CreditGrantRow, int]]] = defaultdict(list)
    for part in _chunks(list(set(customer_ids))):
        rows = [CreditGrantRow.model_validate(r._mapping) for r in
                conn.execute(select(CreditGrantRow).where(CreditGrantRow.customer_id.in_(part)))]
        if not rows:
            continue
        burned = dict(conn.execute(select(CreditBurn.grant_id, func.sum(CreditBurn.amount_micro))
                                   .where(CreditBurn.grant_id.in_([g.id for g in rows]))
                                   .group_by(CreditBurn.grant_id)).all())
        for g in rows:
            out[g.customer_id].append((g, g.amount_micro - int(burned.get(g.id) or 0)))
    return out


def burns_by_invoices(conn: Connection, invoice_ids: Sequence[int]) -> dict[str, int]:
    if not invoice_ids:
        return {}
    rows = conn.execute(select(CreditBurn.grant_id, func.sum(CreditBurn.amount_micro))
                        .where(CreditBurn.invoice_id.in_(list(invoice_ids))).group_by(CreditBurn.grant_id))
    return {g: int(a) for g, a in rows}


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


def _db_value(pg: bool, value):
    """Bind values the way the ORM stores them (SQLite: naive UTC text with microseconds)."""
    if isinstance(value, datetime):
        return _db_datetime(pg, value)
    return value


@lru_cache(maxsize=4096)
def _db_datetime(pg: bool, value: datetime):
    value = value.astimezone(UTC)
    return value if pg else value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _bulk_insert(conn: Connection, table: str, rows: list[dict], key: str | None = None) -> dict:
    """Multi-row INSERT through the driver; with ``key``, return {row[key]: new id}."""
    if not rows:
        return {}
    pg = conn.dialect.name == "postgresql"
    ph = "%s" if pg else "?"
    columns = list(rows[0])
    per_statement = max(1, min(1000, 30_000 // len(columns)))
    ids: dict = {}
    cursor = conn.connection.driver_connection.cursor()
    try:
        for i in range(0, len(rows), per_statement):
            chunk = rows[i:i + per_statement]
            values = ",".join(["(" + ",".join([ph] * len(columns)) + ")"] * len(chunk))
            params = [_db_value(pg, r[c]) for r in chunk for c in columns]
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}"
            if key:
                cursor.execute(sql + f" RETURNING id, {key}", params)
                ids.update({k: i_ for i_, k in cursor.fetchall()})
            else:
                cursor.execute(sql, params)
    finally:
        cursor.close()
    return ids


def insert_invoices(conn: Connection, invoices: list[dict], lines: list[list[dict]]) -> list[int]:
    """Insert invoices and their lines; return the invoice ids (same order)."""
    if not invoices:
        return []
    by_key = _bulk_insert(conn, "invoice", invoices, key="dedupe_key")
    ids = [by_key[doc["dedupe_key"]] for doc in invoices]
    flat = [{**line, "invoice_id": invoice_id} for invoice_id, invoice_lines in zip(ids, lines)
            for line in invoice_lines]
    for row in flat:
        row.setdefault("stripe_line_id", None)
    _bulk_insert(conn, "invoice_line", flat)
    return ids


def insert_burns(conn: Connection, burns: list[dict]) -> None:
    _bulk_insert(conn, "credit_burn", burns)


def finalized_invoices(conn: Connection, subscription_ids: Sequence[int]) -> list[Invoice]:
    """The finalized period invoices (``inv:`` keys): one per billed period, so each period is
    re-checked for late events once (standalone adjustment invoices bill the same period)."""
    out: list[Invoice] = []
    for part in _chunks(list(subscription_ids)):
        rows = conn.execute(select(Invoice).where(Invoice.subscription_id.in_(part), Invoice.kind == "invoice",
                                                  Invoice.status.in_(("finalized", "paid")),
                                                  Invoice.corrects_invoice_id.is_(None),
                                                  Invoice.dedupe_key.startswith("inv:")))
        out.extend(Invoice.model_validate(r._mapping) for r in rows)
    return out


def recheck_marks(conn: Connection, invoice_ids: Sequence[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for part in _chunks(list(invoice_ids)):
        out.update(dict(conn.execute(select(InvoiceRecheck.invoice_id, InvoiceRecheck.watermark)
                                     .where(InvoiceRecheck.invoice_id.in_(part))).all()))
    return out


def set_recheck(conn: Connection, invoice_id: int, watermark: int) -> None:
    table = InvoiceRecheck.__table__
    done = conn.execute(update(table).where(table.c.invoice_id == invoice_id).values(watermark=watermark)).rowcount
    if not done:
        conn.execute(insert(table).values(invoice_id=invoice_id, watermark=watermark))


def has_late_events(conn: Connection, customer_id: str, after_id: int, start_us: int, end_us: int) -> bool:
    ph = "%s" if conn.dialect.name == "postgresql" else "?"
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute(f"SELECT 1 FROM usage_event WHERE customer_id = {ph} AND id > {ph} AND ts >= {ph} "
                       f"AND ts < {ph} LIMIT 1", [customer_id, after_id, start_us, end_us])
        return cursor.fetchone() is not None
    finally:
        cursor.close()


def billed_lines_for_period(conn: Connection, subscription_id: int, start: datetime, end: datetime) -> list[tuple]:
    """(key, amount_minor) of every finalized line billing this service period of the subscription."""
    rows = conn.execute(
        select(InvoiceLineRow.key, InvoiceLineRow.amount_minor, InvoiceLineRow.description, Invoice.kind)
        .join(Invoice, Invoice.id == InvoiceLineRow.invoice_id)
        .where(Invoice.subscription_id == subscription_id, Invoice.status.in_(("finalized", "paid")),
               InvoiceLineRow.service_start == start, InvoiceLineRow.service_end == end))
    return list(rows)


def invoices_billing_period(conn: Connection, subscription_id: int, start: datetime, end: datetime) -> list[int]:
    rows = conn.execute(select(Invoice.id).join(InvoiceLineRow, InvoiceLineRow.invoice_id == Invoice.id)
                        .where(Invoice.subscription_id == subscription_id,
                               InvoiceLineRow.service_start == start, InvoiceLineRow.service_end == end)
                        .distinct())
    return [r[0] for r in rows]


def grant_currencies(conn: Connection, keys: Iterable[str]) -> dict[str, str]:
    keys = [k for k in set(keys) if k]
    out: dict[str, str] = {}
    for part in _chunks(keys):
        out.update(dict(conn.execute(select(CreditGrantRow.id, CreditGrantRow.currency)
                                     .where(CreditGrantRow.id.in_(part))).all()))
    return out
