"""All SQL of reports and history simulations (read-only: nothing here writes).

SQLite and PostgreSQL: event properties are read with ``json_extract`` (SQLite) or ``->>``
(PostgreSQL); the ``model`` property uses the promoted ``usage_event.model`` column.
Event times are integer microseconds (UTC); money is integer minor units / picodollars.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection, bindparam, or_, select, text

from billing.invoicing.lifecycle import BILLED_STATUSES
from billing.store.models import Customer, Invoice, InvoiceLineRow, Subscription, UsageEventRow
from billing.ledger.rollups import HOUR_US
from billing.store import rollup_sql
from billing.store.wide import exact_sums, sum_sql, summed

_SAFE_PROP = re.compile(r"^[A-Za-z0-9_\-]+$")
ZERO = Decimal(0)
# the token counts reports show: input, output, cached (cache reads), reasoning
TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "reasoning_tokens")
_REPORTED = tuple(rollup_sql.TOKENS.index(name) for name in TOKEN_COLUMNS)


def _number(dialect: str, prop: str) -> str:
    """A numeric property's value (token counts are validated numbers: ``billing.events.is_quantity_key``)."""
    if dialect == "postgresql":
        return f"(properties->>'{prop}')::numeric"
    return f"json_extract(properties, '$.{prop}')"


def _decimal(value) -> Decimal:
    if value is None:
        return ZERO
    return Decimal(value) if isinstance(value, (int, Decimal)) else Decimal(str(value))
_CHUNK = 500


def _chunks(items: Sequence, size: int = _CHUNK):
    for i in range(0, len(items), size):
        yield items[i:i + size]


DAY = "@day"  # a pseudo-property: the event's day (UTC), as days since 1970-01-01
DAY_US = 86_400_000_000


def property_sql(dialect: str, prop: str) -> str:
    """SQL text of an event property as text (``model``: the promoted column; ``type``: the
    event's type, so events of types no plan meters are attributed too; ``DAY``: its UTC day)."""
    if prop == "type":
        return "type"
    if prop == DAY:
        return f"(ts / {DAY_US})"
    if prop == "model":
        return "COALESCE(model, " + (_json_text(dialect, "model")) + ")"
    if not _SAFE_PROP.match(prop):
        raise ValueError(f"property name {prop!r} may only use letters, digits, '_' and '-'")
    return _json_text(dialect, prop)


def _json_text(dialect: str, prop: str) -> str:
    """The property as text like Python's ``str()`` of the JSON value (true -> 'True'), the
    way meters filter on it (``billing.store.aggregate_sql``)."""
    if dialect == "postgresql":
        return (f"(CASE json_typeof(properties->'{prop}') WHEN 'boolean' THEN initcap(properties->>'{prop}') "
                f"ELSE properties->>'{prop}' END)")
    path = f"'$.\"{prop}\"'"
    return (f"(CASE json_type(properties, {path}) WHEN 'true' THEN 'True' WHEN 'false' THEN 'False' "
            f"ELSE CAST(json_extract(properties, {path}) AS TEXT) END)")


# --------------------------------------------------------------------- customers & subs

def customers(conn: Connection) -> dict[str, tuple[str, str]]:
    """customer id -> (timezone, currency)."""
    return {cid: (tz, cur) for cid, tz, cur in conn.execute(select(Customer.id, Customer.timezone, Customer.currency))}


@dataclass(frozen=True)
class SubscriptionRow:
    """The columns of a subscription that reports and simulations read."""

    id: int
    customer_id: str
    plan_id: str
    plan_version: int
    started_at: datetime
    ended_at: datetime | None
    trial_end: datetime | None


def subscriptions_overlapping(conn: Connection, start: datetime, end: datetime) -> list[SubscriptionRow]:
    """Subscriptions active at some instant of [start, end), oldest first."""
    t = Subscription.__table__.c
    rows = conn.execute(select(t.id, t.customer_id, t.plan_id, t.plan_version, t.started_at, t.ended_at, t.trial_end)
                        .where(t.started_at < end, or_(t.ended_at.is_(None), t.ended_at > start))
                        .order_by(t.started_at, t.id))
    return [SubscriptionRow(*r) for r in rows]


# ------------------------------------------------------------------------------ invoices

@dataclass(frozen=True)
class BilledLine:
    invoice_id: int
    customer: str
    subscription_id: int | None
    kind: str  # invoice | credit_note (the document)
    plan_id: str
    plan_version: int
    currency: str
    service_start: datetime
    amount_minor: int
    voided_at: datetime | None
    # the line closes its service window: not an advance fee invoiced when the window
    # started, nor a threshold invoice's (those bill an open window: it is rated to date)
    closes: bool = True

    def counts_at(self, as_of: datetime) -> int:
        """The line's amount as billed at ``as_of`` (0 once its document is void)."""
        return 0 if self.voided_at is not None and self.voided_at <= as_of else self.amount_minor


def billed_lines(conn: Connection, start: datetime, end: datetime, as_of: datetime) -> list[BilledLine]:
    """Lines of invoices and credit notes finalized by ``as_of`` whose service window starts in
    [start, end): a period's original invoice, and the adjustments and credit notes for it
    that later closes issued, its advance fees and threshold invoices (``closes`` False).
    Voided documents are included (``counts_at`` gives 0 once void) so that a voided period
    is known to be closed, not re-rated."""
    inv, line = Invoice.__table__.c, InvoiceLineRow.__table__.c
    rows = conn.execute(select(inv.id, inv.customer_id, inv.subscription_id, inv.kind, inv.plan_id,
                               inv.plan_version, inv.currency, line.service_start, line.amount_minor, inv.voided_at,
                               line.billed_in_advance, inv.dedupe_key)
                        .join_from(InvoiceLineRow.__table__, Invoice.__table__, line.invoice_id == inv.id)
                        .where(line.service_start >= start, line.service_start < end,
                               inv.status.in_(BILLED_STATUSES), inv.finalized_at.is_not(None),
                               inv.finalized_at <= as_of)
                        .order_by(inv.id, line.position))
    return [BilledLine(*r[:10], closes=not r[10] and not r[11].startswith("thr:")) for r in rows]


# -------------------------------------------------------------------------------- events

@dataclass(frozen=True)
class EventRow:
    customer: str
    event_id: str
    type: str
    ts: int  # microseconds, UTC
    properties: dict
    cost_pico: int


def events_between(conn: Connection, start_us: int, end_us: int, customers: Sequence[str] | None = None,
                   types: Iterable[str] | None = None) -> list[EventRow]:
    """Events with start <= ts < end (optionally only these customers / types), in time order."""
    t = UsageEventRow.__table__
    base = select(t.c.customer_id, t.c.event_id, t.c.type, t.c.ts, t.c.properties, t.c.cost_pico).where(
        t.c.ts >= start_us, t.c.ts < end_us)
    if types is not None:
        base = base.where(t.c.type.in_(sorted(set(types))))
    out: list[EventRow] = []
    parts = [None] if customers is None else list(_chunks(sorted(set(customers))))
    for part in parts:
        query = base if part is None else base.where(t.c.customer_id.in_(part))
        out.extend(EventRow(*r) for r in conn.execute(query.order_by(t.c.ts, t.c.id)))
    out.sort(key=lambda e: (e.ts, e.customer, e.event_id))
    return out


@dataclass(frozen=True)
class CostRow:
    customer: str
    key: str | None  # the property value (None: the event has no such property)
    events: int
    interactions: int  # events of the interaction type
    cost_pico: int
    tokens: tuple[Decimal, ...] = (ZERO,) * 4  # input, output, cached (cache reads), reasoning; with ``tokens``


NONE_KEY = "(none)"
KEY_SEPARATOR = " / "


def _props(prop: str | Sequence[str] | None) -> tuple[str, ...]:
    """``cost_by``'s ``prop``: none, one property, or two (a two-way breakdown)."""
    if prop is None:
        return ()
    props = (prop,) if isinstance(prop, str) else tuple(prop)
    if not 1 <= len(props) <= 2 or len(set(props)) < len(props):
        raise ValueError("break down by one property or by two different ones")
    return props


def join_key(parts: Sequence[str | None]) -> str | None:
    """The key of a row by one property (its value, None without it) or by two
    (``value / value``, ``(none)`` for a missing one; None when both are missing)."""
    if len(parts) == 1:
        return parts[0]
    if all(p is None for p in parts):
        return None
    return KEY_SEPARATOR.join(NONE_KEY if p is None else p for p in parts)


def cost_by(conn: Connection, start_us: int, end_us: int, prop: str | Sequence[str] | None = None,
            customers: Sequence[str] | None = None, interaction_type: str = "llm.call",
            rollups: bool = True, tokens: bool = False) -> list[CostRow]:
    """Provider cost and event counts per customer (and per value of ``prop``, or per pair of
    values of two properties: ``join_key``) over [start, end):
    from the hourly rollups where they are exact for the question (``rollup_costs``), else
    (or with ``rollups`` False) from the events. ``tokens``: with the token counts (``TOKENS``)."""
    if rollups:
        found = rollup_costs(conn, start_us, end_us, prop, customers, interaction_type, tokens)
        if found is not None:
            return found
    return event_costs(conn, start_us, end_us, prop, customers, interaction_type, tokens)


def rollup_costs(conn: Connection, start_us: int, end_us: int, prop: str | Sequence[str] | None = None,
                 customers: Sequence[str] | None = None, interaction_type: str = "llm.call",
                 tokens: bool = False, found: dict[tuple, rollup_sql.RollupTotal] | None = None
                 ) -> list[CostRow] | None:
    """``cost_by`` from the rollups over the window's whole hours and the events over its
    edges, or None when the rollups are not exact for it (``billing.ledger.rollups``).
    ``found``: the rollups' totals of those hours by customer and ``prop``, already read."""
    a, b = -(-start_us // HOUR_US) * HOUR_US, end_us // HOUR_US * HOUR_US
    if a >= b or rollup_sql.stale(conn):
        return None
    props = _props(prop)
    dims = rollup_sql.dimensions(conn) if props else ()
    if any(p not in ("type", "model", DAY) and p not in dims for p in props):
        return None
    if found is None:
        found = rollup_sql.totals(conn, a, b, props, customers, interaction_type)
    if any(p not in ("type", DAY) for p in props) and any(t.odd for t in found.values()):
        return None
    if tokens and any(t.rounded for t in found.values()):
        return None
    acc: dict[tuple[str, str | None], list] = {}
    for key, t in found.items():
        parts = [None if v is None or (v == "" and p == "model") else str(v) for p, v in zip(props, key[1:])]
        acc[(key[0], join_key(parts))] = [
            t.events, t.interactions, t.cost_pico, *(Decimal(t.tokens[i]) for i in _REPORTED)]
    for lo, hi in ((start_us, a), (b, end_us)):  # the edges: from the events
        if lo < hi:
            for r in event_costs(conn, lo, hi, prop, customers, interaction_type, tokens):
                slot = acc.setdefault((r.customer, r.key), [0, 0, 0, ZERO, ZERO, ZERO, ZERO])
                for i, v in enumerate((r.events, r.interactions, r.cost_pico, *r.tokens)):
                    slot[i] += v
    return [CostRow(c, k, n, i, cost, tuple(t) if tokens else (ZERO,) * 4)
            for (c, k), (n, i, cost, *t) in
            sorted(acc.items(), key=lambda kv: (kv[0][0], kv[0][1] is None, kv[0][1] or "")) if n]


def event_costs(conn: Connection, start_us: int, end_us: int, prop: str | Sequence[str] | None = None,
                customers: Sequence[str] | None = None, interaction_type: str = "llm.call",
                tokens: bool = False) -> list[CostRow]:
    """``cost_by`` from the events."""
    dialect = conn.dialect.name
    props = _props(prop)
    keys = [property_sql(dialect, p) for p in props] or ["NULL"]
    key = ", ".join(keys)
    group = "customer_id" + "".join(f", {k}" for k in keys) if props else "customer_id"
    width = len(keys)
    params = {"itype": interaction_type, "start": start_us, "end": end_us}
    token_sums = "".join(f", SUM({_number(dialect, name)})" for name in TOKEN_COLUMNS) if tokens else ""

    def rows(where: str, values: dict) -> list[CostRow]:
        def query(split: bool) -> list[tuple]:
            sql = (f"SELECT customer_id, {key}, COUNT(*), SUM(CASE WHEN type = :itype THEN 1 ELSE 0 END), "
                   f"{sum_sql('cost_pico', split)}{token_sums} FROM usage_event WHERE ts >= :start AND ts < :end{where} "
                   f"GROUP BY {group}")
            stmt = text(sql)
            if where:
                stmt = stmt.bindparams(bindparam("ids", expanding=True))
            return conn.execute(stmt, values).all()

        return [CostRow(r[0], join_key([None if k is None else str(k) for k in r[1:1 + width]]) if props else None,
                        int(r[1 + width]), int(r[2 + width] or 0), int(summed(*r[3 + width:6 + width])),
                        tuple(_decimal(v) for v in r[6 + width:]) if tokens else (ZERO,) * 4)
                for r in exact_sums(query)]

    if customers is None:
        return rows("", params)
    out: list[CostRow] = []
    for part in _chunks(sorted(set(customers))):
        out.extend(rows(" AND customer_id IN :ids", {**params, "ids": list(part)}))
    return out
