"""The statements that read customers' quota contexts (``billing.reservations.sql.Context``).

One context is six small reads: the customer (with its ``context_version``: read first, so
a write after it is seen as a newer version) and its budgets, its subscriptions, their seat
changes, its finalized invoices whose payment failed, its credit grants with what they
burned, its subscriptions' contract overrides. ``context_statements(where)`` gives those six
for MANY customers at once: each statement's first column is the customer id and ``where``
(``customer_id IN (...)`` / ``= ANY(array)``, built by the caller) picks the customers, so a
batch of N cold customers costs six statements, not 6 x N (on PostgreSQL, where a pipeline
of 6 x N statements was most of a spread check's cost). ``group_rows`` splits their rows back
into each customer's six lists, in the order ``_context`` parses them.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from billing.contracts.repository import OVERRIDES_OF_CUSTOMER
from billing.reservations.budget_sql import BUDGET_COLUMNS

# ``{col}`` is replaced by the column the customer filter applies to, ``{where}`` by that filter
_CONTEXT_SQL_MANY = (
    f"SELECT c.id, c.timezone, c.cost_guard, {BUDGET_COLUMNS}, c.context_version FROM customer c "
    "LEFT JOIN budget b ON b.customer_id = c.id WHERE {where:c.id}",
    "SELECT customer_id, id, plan_id, plan_version, anchor_at, started_at, ended_at FROM subscription "
    "WHERE {where:customer_id}",
    "SELECT s.customer_id, sc.subscription_id, sc.effective_at, sc.seats, sc.id FROM seat_change sc "
    "JOIN subscription s ON s.id = sc.subscription_id WHERE {where:s.customer_id}",
    "SELECT customer_id, payment_failed_at FROM invoice WHERE {where:customer_id} AND status = 'finalized' "
    "AND kind = 'invoice' AND payment_failed_at IS NOT NULL",
    "SELECT g.customer_id, g.id, g.amount_micro, g.applies_to, g.effective_at, g.expires_at, "
    "(SELECT COALESCE(SUM(b.amount_micro), 0) FROM credit_burn b WHERE b.grant_id = g.id) "
    "FROM credit_grant g WHERE {where:g.customer_id}",
    # the one-customer statement of ``billing.contracts`` with the customer id first
    OVERRIDES_OF_CUSTOMER.replace("SELECT ", "SELECT s.customer_id, ", 1)
    .replace("WHERE s.customer_id = ?", "WHERE {where:s.customer_id}"),
)
assert all(q.count("{where:") == 1 for q in _CONTEXT_SQL_MANY)
# (the single-customer statements, ``billing.reservations.sql._CONTEXT_SQL``, read the same
# columns in the same order: tests/quota/test_context_cache.py holds the two loads equal)


def context_statements(where) -> list[tuple[str, list]]:
    """The six context reads for a set of customers: ``where(column)`` -> (SQL condition on
    ``column``, its parameters)."""
    out = []
    for sql in _CONTEXT_SQL_MANY:
        head, rest = sql.split("{where:", 1)
        column, tail = rest.split("}", 1)
        condition, params = where(column)
        out.append((head + condition + tail, params))
    return out


def group_rows(customers: Sequence[str], results: Sequence[list[tuple]]) -> dict[str, list[list[tuple]]]:
    """Each customer's rows of the six statements (first column dropped), in statement order."""
    out: dict[str, list[list[tuple]]] = {c: [[] for _ in results] for c in customers}
    for i, rows in enumerate(results):
        for row in rows:
            found = out.get(row[0])
            if found is not None:
                found[i].append(tuple(row[1:]))
    return out


# ------------------------------------------------ one customer, one statement (SQLite)
#
# In process every statement costs its own Python call, bind and step: a cold check's six
# were most of its extra cost. SQLite reads the same six sets of rows in ONE statement, each
# as a JSON array of arrays (``json_group_array``: numbers stay integers, instants and the
# budgets' decimal amounts are text, as the six statements return them); ``one_rows`` turns
# it back into the six lists. tests/quota/test_context_cache.py holds both loads equal.
_BUDGET_ARRAY = "json_array(" + ", ".join(BUDGET_COLUMNS.split(", ")) + ")"
SQLITE_ONE_CONTEXT = (
    "SELECT c.timezone, c.cost_guard, c.context_version, "
    f"(SELECT json_group_array({_BUDGET_ARRAY}) FROM budget b WHERE b.customer_id = c.id), "
    "(SELECT json_group_array(json_array(id, plan_id, plan_version, anchor_at, started_at, ended_at)) "
    "FROM subscription WHERE customer_id = c.id), "
    "(SELECT json_group_array(json_array(sc.subscription_id, sc.effective_at, sc.seats, sc.id)) FROM seat_change sc "
    "JOIN subscription s ON s.id = sc.subscription_id WHERE s.customer_id = c.id), "
    "(SELECT json_group_array(json_array(payment_failed_at)) FROM invoice WHERE customer_id = c.id "
    "AND status = 'finalized' AND kind = 'invoice' AND payment_failed_at IS NOT NULL), "
    "(SELECT json_group_array(json_array(g.id, g.amount_micro, g.applies_to, g.effective_at, g.expires_at, "
    "(SELECT COALESCE(SUM(b.amount_micro), 0) FROM credit_burn b WHERE b.grant_id = g.id))) "
    "FROM credit_grant g WHERE g.customer_id = c.id), "
    "(SELECT json_group_array(json_array(o.subscription_id, o.path, o.value, o.starts_at, o.ends_at, o.id)) "
    "FROM contract_override o JOIN subscription s ON s.id = o.subscription_id WHERE s.customer_id = c.id) "
    "FROM customer c WHERE c.id = ?")
_NO_BUDGET = (None,) * len(BUDGET_COLUMNS.split(", "))


def one_rows(found: list[tuple]) -> list[list[tuple]]:
    """``SQLITE_ONE_CONTEXT``'s row (none: an unknown customer) as the six statements' rows."""
    if not found:
        return [[] for _ in range(6)]
    tz, guard, version, budgets, *sets = found[0]
    loads = orjson.loads
    budget_rows = [tuple(b) for b in loads(budgets)] or [_NO_BUDGET]
    return [[(tz, guard, *b, version) for b in budget_rows], *([tuple(r) for r in loads(s)] for s in sets)]
