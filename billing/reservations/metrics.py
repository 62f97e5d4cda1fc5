"""Reads of the quota metrics: commits that arrived after their hold expired.

A late commit is recorded and counted like any other (the usage happened), but its hold's
units may meanwhile have been granted to another reservation, so a customer can end above
its limit. Each one is logged in ``quota_late_commit`` by the commit's own transaction
(``billing.reservations.events``); these reads count them. Statements take ``?``
placeholders and run on the quota driver connections (``billing.reservations.sql.run_all``).
"""

from __future__ import annotations

from typing import Any

from billing.reservations.sql import Connections, run_all

_COUNT = ("SELECT COUNT(*) FROM quota_late_commit WHERE customer_id = ? AND committed_at >= ? "
          "AND committed_at < ?")
_BY_METER = ("SELECT customer_id, meter, COUNT(*), SUM(units_micro), MAX(committed_at), MAX(committed_at - expired_at) "
             "FROM quota_late_commit WHERE committed_at >= ? AND committed_at <= ? {customer}"
             "GROUP BY customer_id, meter ORDER BY COUNT(*) DESC, customer_id, meter LIMIT ?")
_TOTAL = "SELECT COUNT(*) FROM quota_late_commit WHERE committed_at >= ? AND committed_at <= ? {customer}"


def late_commit_count(conns: Connections, conn: Any, customer: str, start_us: int, end_us: int) -> int:
    """The customer's late commits recorded in ``[start_us, end_us)``."""
    return int(run_all(conns, conn, [(_COUNT, (customer, start_us, end_us))])[0][0][0])


def late_commits_by_meter(conns: Connections, conn: Any, start_us: int, end_us: int, *,
                          customer: str | None = None, limit: int = 100) -> tuple[int, list[tuple]]:
    """Late commits recorded from ``start_us`` to ``end_us`` inclusive (of one customer when
    given): the total, and per (customer, meter), most first, at most ``limit``: the count, the units
    their holds had held (micro-units), the last one's time and the longest delay past
    expiry (microseconds)."""
    where = "AND customer_id = ? " if customer is not None else ""
    extra = (customer,) if customer is not None else ()
    total, rows = run_all(conns, conn, [(_TOTAL.format(customer=where), (start_us, end_us, *extra)),
                                        (_BY_METER.format(customer=where), (start_us, end_us, *extra, limit))])
    return int(total[0][0]), [(c, m, int(n), int(units), int(last), int(delay)) for c, m, n, units, last, delay in rows]
