"""What the margin report's cost split reads (``billing.reports.costs_beyond``): per customer
over a window, the provider cost of the events carrying token counts (model calls) and of
the others (tool calls, vector-store queries, searches, reported costs), the distinct
``user`` values, and the outcome events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, text

from billing.store.aggregate_sql import _Sql

TOKEN_PROPERTIES = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


@dataclass(frozen=True)
class SplitRow:
    customer: str
    ai_cost_pico: int
    other_cost_pico: int
    users: int
    outcomes: int


def cost_split(conn: Connection, start_us: int, end_us: int, outcome_types: Sequence[str],
               customers: Sequence[str] | None = None) -> list[SplitRow]:
    sql = _Sql(conn.dialect.name)
    tokens = " OR ".join(f"{sql.text(p, 'usage_event')} IS NOT NULL" for p in TOKEN_PROPERTIES)
    types = list(outcome_types) or [""]
    where = " AND customer_id IN :ids" if customers is not None else ""
    stmt = text(f"SELECT customer_id, SUM(CASE WHEN {tokens} THEN cost_pico ELSE 0 END), "
                f"SUM(CASE WHEN {tokens} THEN 0 ELSE cost_pico END), "
                f"COUNT(DISTINCT {sql.text('user', 'usage_event')}), "
                f"SUM(CASE WHEN type IN :types THEN 1 ELSE 0 END) FROM usage_event "
                f"WHERE ts >= :start AND ts < :end{where} GROUP BY customer_id")
    stmt = stmt.bindparams(bindparam("types", expanding=True))
    params = {"start": start_us, "end": end_us, "types": types}
    if customers is not None:
        stmt = stmt.bindparams(bindparam("ids", expanding=True))
        params["ids"] = list(customers)
    return [SplitRow(c, int(a or 0), int(o or 0), int(u or 0), int(n or 0)) for c, a, o, u, n in conn.execute(stmt, params)]
