"""The statement that reads customers' quota contexts (``billing.reservations.sql.Context``).

A context is made of six sets of rows: the customer (with its ``context_version``: read in
the same statement, so a write after it is seen as a newer version) and its budgets, its
subscriptions, their seat changes, its finalized invoices whose payment failed, its credit
grants with what they burned, its subscriptions' contract overrides. ``context_query`` reads
them for ANY number of customers in ONE statement: one row per customer, each set as a JSON
array of arrays (``json_group_array`` on SQLite, ``json_agg`` on PostgreSQL; numbers stay
integers, instants and the budgets' decimal amounts are text, parsed as the columns' own
values are). A cold check's context used to be six statements (six pipelined cursors on
PostgreSQL, six executions per batch on the server): with checks spread over 100,000
customers that was most of what a spread check cost beyond a one-customer one.
``context_rows`` turns a row back into the six lists ``reservations.sql._context`` parses;
tests/quota/test_context_cache.py holds them equal to the six tables read one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from billing.contracts.repository import OVERRIDES_OF_CUSTOMER
from billing.reservations.budget_sql import BUDGET_COLUMNS

# each set: its columns, and FROM ... WHERE ... for the customer ``c.id`` (in no order: ``_context``
# orders what it needs)
_SETS = (
    (BUDGET_COLUMNS, "budget b WHERE b.customer_id = c.id"),
    ("id, plan_id, plan_version, anchor_at, started_at, ended_at", "subscription WHERE customer_id = c.id"),
    ("sc.subscription_id, sc.effective_at, sc.seats, sc.id",
     "seat_change sc JOIN subscription s ON s.id = sc.subscription_id WHERE s.customer_id = c.id"),
    ("payment_failed_at", "invoice WHERE customer_id = c.id AND status = 'finalized' AND kind = 'invoice' "
     "AND payment_failed_at IS NOT NULL"),
    # what a grant burned: text on PostgreSQL (a SUM of bigints is numeric there, not a JSON integer)
    ("g.id, g.amount_micro, g.applies_to, g.effective_at, g.expires_at, "
     "(SELECT {burned} FROM credit_burn b WHERE b.grant_id = g.id)", "credit_grant g WHERE g.customer_id = c.id"),
    # the subscriptions' contract overrides: ``billing.contracts``' own statement
    tuple(OVERRIDES_OF_CUSTOMER.removeprefix("SELECT ").replace("s.customer_id = ?", "s.customer_id = c.id")
          .split(" FROM ", 1)),
)
assert _SETS[-1][1].endswith("s.customer_id = c.id")
_BURNED = {False: "COALESCE(SUM(b.amount_micro), 0)", True: "COALESCE(SUM(b.amount_micro), 0)::text"}


def _sqlite() -> str:
    """Each set a subquery of the customer's row (SQLite finds every set by its index)."""
    sets = [f"(SELECT json_group_array(json_array({columns.replace('{burned}', _BURNED[False])})) FROM {source})"
            for columns, source in _SETS]
    return f"SELECT c.id, c.timezone, c.cost_guard, c.context_version, {', '.join(sets)} FROM customer c WHERE "


def _postgres() -> str:
    """Each set grouped by customer over all the customers asked, joined to their rows: set
    at a time, never a subquery per customer (which, on tables not yet analyzed, PostgreSQL
    may run as a scan of the whole table per customer)."""
    joins = []
    for i, (columns, source) in enumerate(_SETS):
        columns = columns.replace("{burned}", _BURNED[True])
        table, where = source.split(" WHERE ", 1)
        owner = where.split(" = c.id", 1)[0]
        joins.append(f"LEFT JOIN (SELECT {owner} AS customer_id, json_agg(json_build_array({columns}))::text AS j "
                     f"FROM {table} WHERE {where.replace(' = c.id', ' = ANY(%b::varchar[])', 1)} "
                     f"GROUP BY {owner}) s{i} ON s{i}.customer_id = c.id")
    sets = ", ".join(f"s{i}.j" for i in range(len(_SETS)))
    return (f"SELECT c.id, c.timezone, c.cost_guard, c.context_version, {sets} FROM customer c {' '.join(joins)} "
            "WHERE c.id = ANY(%b::varchar[])")


_SELECT = {False: _sqlite(), True: _postgres()}
assert _SELECT[True].count("%b") == len(_SETS) + 1
_NO_BUDGET = (None,) * len(BUDGET_COLUMNS.split(", "))


def context_query(pg: bool, customers: Sequence[str]) -> tuple[str, list[Any]]:
    """The contexts' statement for ``customers`` (rows: id, timezone, cost guard, version,
    then the six sets as JSON text)."""
    if pg:
        ids = list(customers)
        return _SELECT[True], [ids] * (len(_SETS) + 1)
    if len(customers) == 1:
        return _SELECT[False] + "c.id = ?", list(customers)
    return _SELECT[False] + f"c.id IN ({','.join('?' * len(customers))})", list(customers)


def context_rows(row: Sequence[Any] | None) -> list[list[tuple]]:
    """One row of ``context_query`` (None: an unknown customer) as the six sets' rows: the
    customer's (timezone, cost guard, budget columns..., version), one per budget (one of
    NULL budget columns without any), then each set's rows."""
    if row is None:
        return [[] for _ in range(6)]
    _, tz, guard, version, budgets, *sets = row
    loads = orjson.loads
    budget_rows = [tuple(b) for b in loads(budgets)] if budgets else []
    return [[(tz, guard, *b, version) for b in budget_rows or [_NO_BUDGET]],
            *([tuple(r) for r in loads(s)] if s else [] for s in sets)]
