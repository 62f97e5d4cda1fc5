"""Exact integers past 64 bits, on SQLite and PostgreSQL alike.

Stored totals: a running total (a counter's micro-units or picodollars, an agent task's
tokens or cost) is two BIGINT columns, ``low`` and ``carry``, holding
``carry * WIDE + low`` with ``0 <= low < WIDE`` (``WIDE`` = 10^18). One event adds at
most 10^18 to a total (10^12 units in micro-units, $1,000,000 in picodollars), so its delta
is ``split`` into the same two parts and an upsert adds them with ``add_sql``: the low
parts' sum stays under 2 * 10^18 (no intermediate value near 2^63 on either database) and
what passes ``WIDE`` moves to the carry in the same statement (``SET`` expressions read
the row as it was). A total never overflows (the carry alone would need 10^37) and never
changes type. Readers ``join`` the parts in Python.

Sums in queries: SQLite's ``SUM`` of integers raises "integer overflow" past 2^63 (and
PostgreSQL's ``SUM(bigint)`` is an exact ``numeric``). ``sum_sql`` gives three columns
whose ``summed`` value is the exact sum: ``0, 0, SUM(x)`` normally, and on SQLite after an
overflow (``exact_sums`` runs the query again) the sums of the value's parts below 10^6,
10^6-10^12 and above 10^12, each under 10^6 per row of values up to 10^18: those sums could
overflow only past 9.2 * 10^12 rows in one group. ``held_sum_sql`` is the cheaper split
the quota reads use over live holds (two sums of parts under 10^9: past 9.2 * 10^9 live
holds of one customer, which the write rate cannot reach within a hold's longest TTL).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

WIDE = 10**18
HELD = 10**9  # the part size of held_sum_sql

T = TypeVar("T")


def split(n: int) -> tuple[int, int]:
    """``(carry, low)`` with ``n == carry * WIDE + low`` and ``0 <= low < WIDE``."""
    return divmod(n, WIDE)


def join(carry: Any, low: Any) -> int:
    """The exact integer of a stored ``(carry, low)`` pair (``None`` counts 0)."""
    return int(carry or 0) * WIDE + int(low or 0)


def rem_sql(value: str, divisor: int) -> str:
    """``value`` modulo ``divisor`` for non-negative integers, without ``%`` (a parameter
    marker to psycopg)."""
    return f"({value} - ({value}) / {divisor} * {divisor})"


def add_sql(table: str, low: str, carry: str) -> str:
    """``SET`` assignments adding ``excluded``'s (carry, low) to the row's."""
    both = f"{table}.{low} + excluded.{low}"
    return f"{low} = {rem_sql(both, WIDE)}, {carry} = {table}.{carry} + excluded.{carry} + ({both}) / {WIDE}"


def max_sql(table: str, low: str, carry: str) -> str:
    """``SET`` assignments keeping the greater of the row's and ``excluded``'s (carry, low)."""
    greater = f"(excluded.{carry}, excluded.{low}) > ({table}.{carry}, {table}.{low})"
    return (f"{low} = CASE WHEN {greater} THEN excluded.{low} ELSE {table}.{low} END, "
            f"{carry} = CASE WHEN {greater} THEN excluded.{carry} ELSE {table}.{carry} END")


def sum_sql(expr: str, split_parts: bool = False) -> str:
    """Three columns whose ``summed`` value is ``SUM(expr)``. ``split_parts`` (SQLite only,
    after an overflow: it uses ``%``): the sums of the parts of ``expr``'s integers (up to
    10^18), ``expr`` appearing three times (and so do its parameters)."""
    if not split_parts:
        return f"0, 0, SUM({expr})"
    return f"SUM(({expr}) / 1000000000000), SUM((({expr}) / 1000000) % 1000000), SUM(({expr}) % 1000000)"


def sum_sql_params(expr: str, params: list, split_parts: bool = False) -> tuple[str, list]:
    """``sum_sql`` of an expression with parameters, and the parameters the columns take."""
    return sum_sql(expr, split_parts), list(params) * (3 if split_parts else 1)


def summed(high: Any, middle: Any, low: Any) -> Any:
    """The value of ``sum_sql``'s three columns (an ``int``, or PostgreSQL's ``Decimal``
    of a numeric sum; 0 when every row was NULL)."""
    return (high or 0) * 10**12 + (middle or 0) * 10**6 + (low if low is not None else 0)


def held_sums(column: str) -> tuple[str, str]:
    """Two aggregates, ``SUM(column / HELD)`` and ``SUM(column % HELD)``: together ``SUM(column)``
    (the first times ``HELD`` plus the second), for columns of at most 10^18."""
    return f"SUM({column} / {HELD})", f"SUM({rem_sql(column, HELD)})"


def held_sum_sql(column: str) -> str:
    """``held_sums`` as two columns of a select list."""
    return ", ".join(held_sums(column))


def sum_overflowed(exc: BaseException) -> bool:
    """SQLite's "integer overflow" of a SUM (raised by the driver or wrapped by SQLAlchemy)."""
    orig = getattr(exc, "orig", exc)
    return isinstance(orig, sqlite3.OperationalError) and "integer overflow" in str(orig)


def exact_sums(query: Callable[[bool], T]) -> T:
    """``query(False)`` (its sums as plain ``SUM``), or ``query(True)`` (split) when SQLite's
    SUM overflowed: no extra cost unless a group's sum passes 2^63. ``query`` runs the
    statement and fetches its rows (SQLite may raise while rows are fetched)."""
    try:
        return query(False)
    except Exception as exc:  # noqa: BLE001 - only SQLite's overflow is retried
        if not sum_overflowed(exc):
            raise
    return query(True)
