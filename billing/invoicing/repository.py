"""SQL for invoicing: existing invoices, seat and grant snapshots, bulk inserts, numbering."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Connection, func, insert, select, update

from billing.ledger.models import (
    CreditBurn, CreditGrantRow, Customer, Invoice, InvoiceLineRow, InvoiceRecheck, NumberSequence, SeatChange,
    Subscription)

_CHUNK = 500


def _chunks(items: Sequence, size: int = _CHUNK):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def subscriptions_started_before(conn: Connection, as_of: datetime) -> list[Subscription]:
    rows = conn.execute(select(Subscription).where(Subscription.started_at < as_of).order_by(Subscription.id))
    return [Subscription.model_validate(r._mapping) for r in rows]


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


def insert_invoices(conn: Connection, invoices: list[dict], lines: list[list[dict]]) -> list[int]:
    """Insert invoices and their lines; return the invoice ids (same order)."""
    if not invoices:
        return []
    table = Invoice.__table__
    ids = [row.id for row in conn.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True),
                                           invoices)]
    flat = []
    for invoice_id, invoice_lines in zip(ids, lines):
        for line in invoice_lines:
            flat.append({**line, "invoice_id": invoice_id})
    if flat:
        conn.execute(insert(InvoiceLineRow.__table__), flat)
    return ids


def insert_burns(conn: Connection, burns: list[dict]) -> None:
    if burns:
        conn.execute(insert(CreditBurn.__table__), burns)


def finalized_invoices(conn: Connection, subscription_ids: Sequence[int]) -> list[Invoice]:
    out: list[Invoice] = []
    for part in _chunks(list(subscription_ids)):
        rows = conn.execute(select(Invoice).where(Invoice.subscription_id.in_(part), Invoice.kind == "invoice",
                                                  Invoice.status.in_(("finalized", "paid")),
                                                  Invoice.corrects_invoice_id.is_(None)))
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
