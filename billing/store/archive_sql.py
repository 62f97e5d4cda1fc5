"""SQL of ``billing events archive`` (``billing.ledger.archive``): which customers have
events in a time range, the paid period invoices that cover them, the events themselves
(streamed in id order), and dropping them (PostgreSQL: the months' partitions; SQLite: the
rows) with the archive horizon moved, in one transaction."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Connection

from billing.store import partitions
from billing.store.types import from_us

EVENT_COLUMNS = ("id", "customer_id", "event_id", "type", "ts", "properties", "model", "cost_pico", "unpriced",
                 "unmetered")
_PAGE = 20_000


def _ph(conn: Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"


def customer_spans(conn: Connection, low: int, high: int) -> list[tuple[str, int, int, int]]:
    """(customer, first ts, last ts, events) of the customers with events in [low, high)."""
    ph = _ph(conn)
    rows = conn.exec_driver_sql(
        f"SELECT customer_id, MIN(ts), MAX(ts), COUNT(*) FROM usage_event WHERE ts >= {ph} AND ts < {ph} "
        "GROUP BY customer_id ORDER BY customer_id", (low, high)).all()
    return [(c, int(a), int(b), int(n)) for c, a, b, n in rows]


def period_invoices(conn: Connection, customer: str, low: int, high: int) -> list[tuple]:
    """(id, number, status, period start, period end, total_minor, provider cost pico) of the
    customer's period invoices (not credit notes, not void) overlapping [low, high), by start."""
    ph = _ph(conn)
    rows = conn.exec_driver_sql(
        f"SELECT id, number, status, period_start, period_end, total_minor, provider_cost_carry, provider_cost_pico "
        f"FROM invoice WHERE customer_id = {ph} AND kind = 'invoice' AND status <> 'void' "
        f"AND period_start < {ph} AND period_end > {ph} ORDER BY period_start, id",
        (customer, _stored_dt(conn, high), _stored_dt(conn, low))).all()
    from billing.store.wide import join  # (carry, low) -> int

    return [(i, n, s, _read_dt(a), _read_dt(b), int(t), join(int(cc), int(cp))) for i, n, s, a, b, t, cc, cp in rows]


def invoice_row(conn: Connection, invoice_id: int) -> tuple | None:
    """(status, total_minor, provider cost pico, customer) of an invoice, None when gone."""
    ph = _ph(conn)
    row = conn.exec_driver_sql(
        f"SELECT status, total_minor, provider_cost_carry, provider_cost_pico, customer_id FROM invoice "
        f"WHERE id = {ph}", (invoice_id,)).first()
    if row is None:
        return None
    from billing.store.wide import join

    return row[0], int(row[1]), join(int(row[2]), int(row[3])), row[4]


def _stored_dt(conn: Connection, ts: int):
    moment = from_us(ts)
    return moment if conn.dialect.name == "postgresql" else moment.replace(tzinfo=None).isoformat(" ")


def _read_dt(value) -> int:
    from datetime import UTC, datetime

    from billing.store.types import to_us

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return to_us(value.replace(tzinfo=UTC) if value.tzinfo is None else value)


def events(conn: Connection, low: int, high: int) -> Iterator[tuple]:
    """The events of [low, high) in id order (``EVENT_COLUMNS``; properties as the stored
    JSON text: exact numbers), a page at a time."""
    ph = _ph(conn)
    columns = ", ".join("CAST(properties AS TEXT)" if c == "properties" else c for c in EVENT_COLUMNS)
    sql = (f"SELECT {columns} FROM usage_event WHERE ts >= {ph} AND ts < {ph} AND id > {ph} "
           f"ORDER BY id LIMIT {_PAGE}")
    last = 0
    cursor = conn.connection.driver_connection.cursor()
    try:
        while True:
            cursor.execute(sql, [low, high, last])
            page = cursor.fetchall()
            yield from page
            if len(page) < _PAGE:
                return
            last = page[-1][0]
    finally:
        cursor.close()


def set_horizon(conn: Connection, ts: int) -> None:
    """Events before ``ts`` are archived: ingestion rejects them from now on."""
    ph = _ph(conn)
    updated = conn.exec_driver_sql(f"UPDATE ledger_state SET value = {ph} WHERE name = {ph} AND value < {ph}",
                                   (ts, partitions.HORIZON, ts)).rowcount
    if not updated and partitions.horizon_us(conn) is None:
        conn.exec_driver_sql(f"INSERT INTO ledger_state (name, value) VALUES ({ph}, {ph})", (partitions.HORIZON, ts))


def drop_range(conn: Connection, low: int, high: int, expected: int) -> int:
    """Remove the events of [low, high) once their count is ``expected`` (else ValueError:
    events arrived meanwhile); PostgreSQL drops the range's monthly partitions (whole months:
    ``high`` is a month's start). Returns the events removed."""
    ph = _ph(conn)
    if conn.dialect.name == "postgresql":
        run = partitions.sql_runner(conn)
        months = sorted(m for m in partitions.existing_months(run)
                        if partitions.month_start_us(m + 1) <= high)
        names = [partitions.partition_name(m) for m in months]
        for name in names:  # no writer adds to them from here on (their rows are counted next)
            conn.exec_driver_sql(f"LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE")
    found = conn.exec_driver_sql(f"SELECT COUNT(*) FROM usage_event WHERE ts >= {ph} AND ts < {ph}",
                                 (low, high)).scalar_one()
    if found != expected:
        raise ValueError(f"{found - expected} events arrived in the archived range while it was written: "
                         "nothing was dropped; run the archive again")
    if conn.dialect.name == "postgresql":
        for name in names:
            conn.exec_driver_sql(f"DROP TABLE {name}")
    else:
        conn.exec_driver_sql(f"DELETE FROM usage_event WHERE ts >= {ph} AND ts < {ph}", (low, high))
    return found
