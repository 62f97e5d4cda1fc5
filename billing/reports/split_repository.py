"""What the margin report's cost split reads (``billing.reports.costs_beyond``): per customer
over a window, the provider cost of the events carrying token counts (model calls) and of
the others (tool calls, vector-store queries, searches, reported costs), the outcome events,
and (for the customers whose plan charges overhead per user) the distinct ``user`` values.

From the hourly rollups where they are exact (``rollup_split``): the window's whole hours,
each row's events all carrying token counts or none of them (``tokened``, NULL before the
column existed); the edges of the window and the customers with a mixed or unknown row read
the events (``event_split``), as does everything while the rollups are stale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, bindparam, text

from billing.ledger.rollups import HOUR_US
from billing.store import rollup_sql
from billing.store.aggregate_sql import _Sql
from billing.store.rollup_sql import RollupTotal
from billing.store.wide import WIDE, exact_sums, sum_sql, summed

if TYPE_CHECKING:
    from billing.reports.repository import CostRow

TOKEN_PROPERTIES = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
_CHUNK = 500


@dataclass(frozen=True)
class SplitRow:
    customer: str
    ai_cost_pico: int
    other_cost_pico: int
    outcomes: int

    def __add__(self, other: "SplitRow") -> "SplitRow":
        return SplitRow(self.customer, self.ai_cost_pico + other.ai_cost_pico,
                        self.other_cost_pico + other.other_cost_pico, self.outcomes + other.outcomes)


def _chunks(customers: Sequence[str] | None) -> list[list[str] | None]:
    if customers is None:
        return [None]
    ids = sorted(set(customers))
    return [ids[i:i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


def cost_split(conn: Connection, start_us: int, end_us: int, outcome_types: Sequence[str],
               customers: Sequence[str] | None = None, rollups: bool = True) -> list[SplitRow]:
    """Per customer (of ``customers``, or all) over [start, end): AI cost, other cost and
    outcome events, from the rollups where exact (``rollups`` False: from the events)."""
    if rollups:
        found = rollup_split(conn, start_us, end_us, outcome_types, customers)
        if found is not None:
            return found
    return event_split(conn, start_us, end_us, outcome_types, customers)


def rollup_split(conn: Connection, start_us: int, end_us: int, outcome_types: Sequence[str],
                 customers: Sequence[str] | None = None, found: dict[tuple, RollupTotal] | None = None
                 ) -> list[SplitRow] | None:
    """``cost_split`` from the rollups over the window's whole hours, the events over its edges
    and for the customers a rollup row cannot answer (mixed or unknown ``tokened``); None
    when the rollups cannot answer at all (stale, no whole hour). ``found``: the rollups'
    per-customer totals of those hours with the split's columns, already read
    (``costs_and_split``)."""
    a, b = -(-start_us // HOUR_US) * HOUR_US, end_us // HOUR_US * HOUR_US
    if a >= b or rollup_sql.stale(conn):
        return None
    rows: dict[str, SplitRow] = {}
    inexact: list[str] = []
    if found is None:
        _split_only(conn, a, b, outcome_types, customers, rows, inexact)
    else:
        for (customer,), t in found.items():
            if t.mixed:
                inexact.append(customer)
                continue
            rows[customer] = SplitRow(customer, t.ai_cost_pico, t.cost_pico - t.ai_cost_pico, t.outcomes)
    for lo, hi in ((start_us, a), (b, end_us)):  # the edges: from the events
        if lo < hi:
            for r in event_split(conn, lo, hi, outcome_types, customers):
                had = rows.get(r.customer)
                rows[r.customer] = r if had is None else had + r
    if inexact:  # the whole window of these customers: from the events
        for c in inexact:
            rows.pop(c, None)
        rows.update((r.customer, r) for r in event_split(conn, start_us, end_us, outcome_types, inexact))
    return [rows[c] for c in sorted(rows)]


def _split_only(conn: Connection, a: int, b: int, outcome_types: Sequence[str], customers: Sequence[str] | None,
                rows: dict[str, SplitRow], inexact: list[str]) -> None:
    """The split's columns alone over the hours [a, b) (``rollup_sql.totals`` with
    ``outcome_types`` reads them beside the costs): into ``rows``, or ``inexact``."""
    pure, mixed = rollup_sql.PURE, rollup_sql.MIXED
    types = list(outcome_types) or [""]
    for part in _chunks(customers):
        def query(split: bool, part=part) -> list:
            where = "" if part is None else " AND customer_id IN :ids"
            stmt = text(f"SELECT customer_id, {sum_sql(f'CASE WHEN {pure} THEN cost_pico ELSE 0 END', split)}, "
                        f"SUM(CASE WHEN {pure} THEN cost_carry ELSE 0 END), {sum_sql('cost_pico', split)}, "
                        f"SUM(cost_carry), SUM(CASE WHEN type IN :types THEN events ELSE 0 END), SUM({mixed}) "
                        f"FROM usage_rollup WHERE hour >= :a AND hour < :b{where} GROUP BY customer_id")
            stmt = stmt.bindparams(bindparam("types", expanding=True))
            values: dict = {"a": a, "b": b, "types": types}
            if part is not None:
                stmt = stmt.bindparams(bindparam("ids", expanding=True))
                values["ids"] = part
            return conn.execute(stmt, values).all()

        for customer, *ai, ai_carry, h, m, lo, carry, outcomes, odd in exact_sums(query):
            if odd:
                inexact.append(customer)
                continue
            ai_pico = int(summed(*ai)) + int(ai_carry or 0) * WIDE
            total = int(summed(h, m, lo)) + int(carry or 0) * WIDE
            rows[customer] = SplitRow(customer, ai_pico, total - ai_pico, int(outcomes or 0))


def costs_and_split(conn: Connection, start_us: int, end_us: int, interaction_type: str,
                    outcome_types: Sequence[str], customers: Sequence[str] | None = None
                    ) -> tuple[list[CostRow], list[SplitRow]] | None:
    """The margin report's per-customer costs (``reports.repository.cost_by`` with tokens) and
    its cost split (``cost_split``) from ONE scan of the rollups' whole hours (each then adds
    its edges and falls back to the events where it must, as it does alone); None when the
    rollups cannot answer (stale, no whole hour)."""
    from billing.reports.repository import event_costs, rollup_costs

    a, b = -(-start_us // HOUR_US) * HOUR_US, end_us // HOUR_US * HOUR_US
    if a >= b or rollup_sql.stale(conn):
        return None
    found = rollup_sql.totals(conn, a, b, (), customers, interaction_type, outcome_types)
    rows = rollup_costs(conn, start_us, end_us, None, customers, interaction_type, True, found=found)
    if rows is None:
        rows = event_costs(conn, start_us, end_us, None, customers, interaction_type, True)
    split = rollup_split(conn, start_us, end_us, outcome_types, customers, found=found)
    return None if split is None else (rows, split)


def event_split(conn: Connection, start_us: int, end_us: int, outcome_types: Sequence[str],
                customers: Sequence[str] | None = None) -> list[SplitRow]:
    """``cost_split`` from the events."""
    sql = _Sql(conn.dialect.name)
    tokens = " OR ".join(f"{sql.text(p, 'usage_event')} IS NOT NULL" for p in TOKEN_PROPERTIES)
    types = list(outcome_types) or [""]
    out: list[SplitRow] = []
    for part in _chunks(customers):
        where = "" if part is None else " AND customer_id IN :ids"
        stmt = text(f"SELECT customer_id, SUM(CASE WHEN {tokens} THEN cost_pico ELSE 0 END), "
                    f"SUM(CASE WHEN {tokens} THEN 0 ELSE cost_pico END), "
                    f"SUM(CASE WHEN type IN :types THEN 1 ELSE 0 END) FROM usage_event "
                    f"WHERE ts >= :start AND ts < :end{where} GROUP BY customer_id")
        stmt = stmt.bindparams(bindparam("types", expanding=True))
        params: dict = {"start": start_us, "end": end_us, "types": types}
        if part is not None:
            stmt = stmt.bindparams(bindparam("ids", expanding=True))
            params["ids"] = part
        out.extend(SplitRow(c, int(a or 0), int(o or 0), int(n or 0)) for c, a, o, n in conn.execute(stmt, params))
    return out


def distinct_users(conn: Connection, start_us: int, end_us: int, customers: Sequence[str]) -> dict[str, int]:
    """customer -> the distinct values of its events' ``user`` property over [start, end)."""
    sql = _Sql(conn.dialect.name)
    out: dict[str, int] = {}
    for part in _chunks(customers):
        stmt = text(f"SELECT customer_id, COUNT(DISTINCT {sql.text('user', 'usage_event')}) FROM usage_event "
                    f"WHERE ts >= :start AND ts < :end AND customer_id IN :ids GROUP BY customer_id"
                    ).bindparams(bindparam("ids", expanding=True))
        out.update((c, int(n or 0)) for c, n in conn.execute(stmt, {"start": start_us, "end": end_us, "ids": part}))
    return out
