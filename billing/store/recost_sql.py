"""SQL of re-costing (``billing.ledger.recost``): unpriced events, their new cost, and the
counters, task usage and invoices that move with it. Every write is in key order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from sqlalchemy import Connection

from billing.invoicing.lifecycle import BILLED_STATUSES, DocumentKind


@dataclass(frozen=True)
class UnpricedRow:
    id: int
    customer: str
    event_id: str
    type: str
    ts: int
    properties: dict
    model: str
    cost_pico: int
    unpriced: str


def _cursor(conn: Connection):
    return conn.connection.driver_connection.cursor()


def _ph(conn: Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"


def unpriced_models(conn: Connection) -> list[str]:
    """The models named by unpriced events (the partial index ``ix_usage_event_unpriced``)."""
    cursor = _cursor(conn)
    try:
        cursor.execute("SELECT DISTINCT model FROM usage_event WHERE unpriced IS NOT NULL AND model IS NOT NULL")
        return sorted(r[0] for r in cursor.fetchall())
    finally:
        cursor.close()


def unpriced_page(conn: Connection, model: str, after_id: int, limit: int) -> list[UnpricedRow]:
    """Up to ``limit`` unpriced events of ``model`` with ids above ``after_id``, in id order."""
    ph = _ph(conn)
    cursor = _cursor(conn)
    try:
        cursor.execute("SELECT id, customer_id, event_id, type, ts, properties, model, cost_pico, unpriced "
                       f"FROM usage_event WHERE unpriced IS NOT NULL AND model = {ph} AND id > {ph} "
                       f"ORDER BY id LIMIT {int(limit)}", [model, after_id])
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return [UnpricedRow(int(i), c, e, t, int(ts), orjson.loads(p) if isinstance(p, (str, bytes)) else p, m, int(cost),
                        u) for i, c, e, t, ts, p, m, cost, u in rows]


def set_costs(conn: Connection, costs: Sequence[tuple[int, int]]) -> set[int]:
    """(event row id, cost_pico) of events to price: each is set and marked priced only if it
    is still unpriced (a concurrent re-cost may have priced it first). Returns the ids this
    statement changed."""
    if not costs:
        return set()
    ordered = sorted(costs)
    cursor = _cursor(conn)
    try:
        if conn.dialect.name == "postgresql":
            cursor.execute("UPDATE usage_event AS u SET cost_pico = v.cost, unpriced = NULL "
                           "FROM (SELECT unnest(%s::bigint[]) AS id, unnest(%s::bigint[]) AS cost) AS v "
                           "WHERE u.id = v.id AND u.unpriced IS NOT NULL RETURNING u.id",
                           ([i for i, _ in ordered], [c for _, c in ordered]))
            return {int(r[0]) for r in cursor.fetchall()}
        changed = set()
        for event_id, cost in ordered:  # SQLite: the transaction holds the write lock
            cursor.execute("UPDATE usage_event SET cost_pico = ?, unpriced = NULL WHERE id = ? AND unpriced IS NOT NULL",
                           (cost, event_id))
            if cursor.rowcount:
                changed.add(event_id)
        return changed
    finally:
        cursor.close()


def set_reasons(conn: Connection, reasons: Sequence[tuple[int, str]]) -> None:
    """A new reason for events that stay unpriced (the book knows more about the model now)."""
    if not reasons:
        return
    ph = _ph(conn)
    cursor = _cursor(conn)
    try:
        cursor.executemany(f"UPDATE usage_event SET unpriced = {ph} WHERE id = {ph} AND unpriced IS NOT NULL",
                           [(reason, i) for i, reason in sorted(reasons)])
    finally:
        cursor.close()


def add_counter_costs(conn: Connection, deltas: dict[tuple[str, str, int], int]) -> None:
    """``cost_pico += delta`` of counters (customer, meter, period start), in key order."""
    ph = _ph(conn)
    rows = [(d, c, m, s) for (c, m, s), d in sorted(deltas.items()) if d]
    if not rows:
        return
    cursor = _cursor(conn)
    try:
        cursor.executemany(f"UPDATE usage_counter SET cost_pico = cost_pico + {ph} WHERE customer_id = {ph} "
                           f"AND meter = {ph} AND period_start = {ph}", rows)
    finally:
        cursor.close()


def add_task_costs(conn: Connection, deltas: dict[tuple[str, str], int]) -> None:
    """``cost_pico += delta`` of agent task usage (customer, task), in key order."""
    ph = _ph(conn)
    rows = [(d, c, t) for (c, t), d in sorted(deltas.items()) if d]
    if not rows:
        return
    cursor = _cursor(conn)
    try:
        cursor.executemany(f"UPDATE agent_task_usage SET cost_pico = cost_pico + {ph} WHERE customer_id = {ph} "
                           f"AND task_id = {ph}", rows)
    finally:
        cursor.close()


def invoiced_windows(conn: Connection, customers: Sequence[str]) -> list[tuple[int, str, object, object]]:
    """(invoice id, customer, window start, window end) of the customers' finalized period
    invoices (the ones the late-event path re-checks: ``invoicing.repository.finalized_invoices``)."""
    from sqlalchemy import select

    from billing.store.models import Invoice

    t = Invoice.__table__.c
    out = []
    names = sorted(set(customers))
    for i in range(0, len(names), 500):
        out.extend(tuple(r) for r in conn.execute(
            select(t.id, t.customer_id, t.period_start, t.period_end)
            .where(t.customer_id.in_(names[i:i + 500]), t.kind == DocumentKind.INVOICE.value, t.status.in_(BILLED_STATUSES),
                   t.corrects_invoice_id.is_(None), t.dedupe_key.startswith("inv:"))))
    return out


def mark_for_recheck(conn: Connection, invoice_ids: Sequence[int]) -> None:
    """Mark invoices whose period was re-costed: the next close re-rates them
    (``invoice_recost``; a mark already there counts one more)."""
    ph = _ph(conn)
    cursor = _cursor(conn)
    try:
        cursor.executemany(f"INSERT INTO invoice_recost (invoice_id, marks) VALUES ({ph}, 1) "
                           "ON CONFLICT (invoice_id) DO UPDATE SET marks = invoice_recost.marks + 1",
                           [(i,) for i in sorted(set(invoice_ids))])
    finally:
        cursor.close()
