"""Events kept though they could not be priced or metered: the list (``billing events
unpriced``, ``GET /v1/events/unpriced``) and the totals (margin reports' "unpriced usage").

Read-only SQL over the partial indexes ``ix_usage_event_unpriced`` and
``ix_usage_event_flagged``: other events cost nothing here (totals over a window too: they
never read the window's events). ``tokens`` is the sum of an event's ``*_tokens`` properties (its units of model usage).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Connection, Engine

from billing.events import TOKEN_FIELDS
from billing.store.types import from_us
from billing.money import dec_str

STATUSES = ("unpriced", "unmetered")
PICO = Decimal(10) ** 12
_MICRO = Decimal(10) ** 6


@dataclass(frozen=True)
class FlaggedEvent:
    row_id: int  # the ledger's row id (paging: ``after``)
    customer: str
    event_id: str
    type: str
    ts: int
    model: str | None
    unpriced: str | None
    unmetered: str | None
    cost_pico: int
    properties: dict

    def to_json(self) -> dict[str, Any]:
        return {"id": self.event_id, "customer": self.customer, "type": self.type,
                "timestamp": from_us(self.ts).isoformat().replace("+00:00", "Z"), "model": self.model,
                "status": "+".join(s for s in STATUSES if getattr(self, s)), "unpriced": self.unpriced,
                "unmetered": self.unmetered, "tokens": dec_str(_tokens(self.properties)),
                "cost": dec_str(Decimal(self.cost_pico) / PICO), "properties": self.properties}


@dataclass(frozen=True)
class FlaggedGroup:
    """Totals of one kind of kept event: ``status`` ``unpriced`` grouped by model (no model:
    None), ``unmetered`` grouped by event type."""

    status: str
    key: str | None
    customers: int
    events: int
    tokens: Decimal
    cost_pico: int

    def to_json(self) -> dict[str, Any]:
        name = "model" if self.status == "unpriced" else "type"
        return {"status": self.status, name: self.key, "customers": self.customers, "events": self.events,
                "tokens": dec_str(self.tokens), "cost": dec_str(Decimal(self.cost_pico) / PICO)}


def _tokens(props: dict) -> Decimal:
    total = Decimal(0)
    for name in TOKEN_FIELDS:
        value = props.get(name)
        if value is not None and not isinstance(value, bool):
            try:
                total += Decimal(str(value).strip())
            except ArithmeticError:
                pass
    return total


def _where(status: str | None, ph: str, customer: str | None, params: list) -> str:
    if status == "unpriced":
        clause = "unpriced IS NOT NULL"
    elif status == "unmetered":
        clause = "unmetered IS NOT NULL"
    elif status is None:
        clause = "(unpriced IS NOT NULL OR unmetered IS NOT NULL)"
    else:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    if customer is not None:
        clause += f" AND customer_id = {ph}"
        params.append(customer)
    return clause


def flagged_events(conn: Connection, *, customer: str | None = None, status: str | None = None, after: int = 0,
                   limit: int = 100) -> list[FlaggedEvent]:
    """Unpriced and/or unmetered events (``status``), oldest first, after row id ``after``."""
    ph = "%s" if conn.dialect.name == "postgresql" else "?"
    params: list = []
    where = _where(status, ph, customer, params)
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute("SELECT id, customer_id, event_id, type, ts, model, unpriced, unmetered, cost_pico, properties "
                       f"FROM usage_event WHERE {where} AND id > {ph} ORDER BY id LIMIT {int(limit)}",
                       [*params, after])
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return [FlaggedEvent(int(i), c, e, t, int(ts), m, u, n, int(cost),
                         orjson.loads(p) if isinstance(p, (str, bytes)) else p)
            for i, c, e, t, ts, m, u, n, cost, p in rows]


def _token_sum(pg: bool) -> str:
    if pg:
        return " + ".join(f"COALESCE((properties->>'{t}')::numeric, 0)" for t in TOKEN_FIELDS)
    return " + ".join(f"COALESCE(CAST(ROUND(json_extract(properties, '$.{t}') * 1000000) AS INTEGER), 0)"
                      for t in TOKEN_FIELDS)


def _sqlite_index(status: str, by_customer: bool) -> str:
    """SQLite: the partial index to read, named: its planner has no statistics of a partial
    index's few rows and would rather read every event of the window through the (ts,
    customer) or (customer, ts) index (a random row read each: seconds per million events).
    (customer, id) of the flagged events when the customers are named, else the status's own."""
    name = "ix_usage_event_unpriced" if status == "unpriced" and not by_customer else "ix_usage_event_flagged"
    return f" INDEXED BY {name}"


def flagged_totals(conn: Connection, *, customer: str | None = None, start_us: int | None = None,
                   end_us: int | None = None, customers: Sequence[str] | None = None) -> list[FlaggedGroup]:
    """Unpriced events by model and unmetered events by type (over [start, end) when given,
    of ``customer`` or of ``customers`` when given): customers, events, tokens, cost."""
    pg = conn.dialect.name == "postgresql"
    ph = "%s" if pg else "?"
    out: list[FlaggedGroup] = []
    chunks = [None] if customers is None else [sorted(set(customers))[i:i + 500]
                                               for i in range(0, len(set(customers)), 500)]
    merged: dict[tuple[str, str | None], list] = {}
    cursor = conn.connection.driver_connection.cursor()
    try:
        for status, key in (("unpriced", "model"), ("unmetered", "type")):
            for part in chunks:
                params: list = []
                where = _where(status, ph, customer, params)
                if start_us is not None:
                    where += f" AND ts >= {ph} AND ts < {ph}"
                    params += [start_us, end_us]
                if part is not None:
                    where += f" AND customer_id IN ({','.join([ph] * len(part))})"
                    params += part
                index = "" if pg else _sqlite_index(status, customer is not None or part is not None)
                cursor.execute(f"SELECT {key}, customer_id, COUNT(*), SUM({_token_sum(pg)}), SUM(cost_pico) "
                               f"FROM usage_event{index} WHERE {where} GROUP BY {key}, customer_id", params)
                for name, _customer, n, tokens, cost in cursor.fetchall():
                    slot = merged.setdefault((status, name), [0, 0, Decimal(0), 0])
                    slot[0] += 1
                    slot[1] += int(n)
                    slot[2] += Decimal(tokens or 0) if pg else Decimal(int(tokens or 0)) / _MICRO
                    slot[3] += int(cost or 0)
    finally:
        cursor.close()
    for (status, name), (n_customers, events, tokens, cost) in merged.items():
        out.append(FlaggedGroup(status, name, n_customers, events, tokens, cost))
    out.sort(key=lambda g: (STATUSES.index(g.status), -g.events, g.key or ""))
    return out


def listing(engine: Engine, *, customer: str | None = None, status: str | None = None, after: int = 0,
            limit: int = 100) -> dict[str, Any]:
    """The JSON of the list: ``events`` (a page), ``next_after`` (the ``after`` of the next
    page, None at the end) and ``totals`` (of every kept event of ``customer``)."""
    with engine.connect() as conn:
        try:
            events = flagged_events(conn, customer=customer, status=status, after=after, limit=limit)
            totals = flagged_totals(conn, customer=customer)
        finally:
            conn.rollback()
    totals = [g for g in totals if status is None or g.status == status]
    return {"events": [e.to_json() for e in events],
            "next_after": events[-1].row_id if len(events) == limit else None,
            "totals": [g.to_json() for g in totals]}
