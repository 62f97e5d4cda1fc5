"""Hourly rollups: what an accepted event adds to ``usage_rollup`` (pure; the SQL is in
``billing.store.rollup_sql``).

An event adds to one row per (customer, hour, type, model, dimension, value): the base row
(dimension ``''``) and one row for each rolled-up property it carries (``rollup_dimension``:
``feature``, ``task``, ``user`` and the ``BILLING_ROLLUP_DIMENSIONS`` of the deployment).
Each row holds the events, their provider cost, and the sums of every integer property.

Where a rollup is exact (the reports' rule, ``billing.reports.repository``): the same
"exact for this question" rule the close applies to the running counters
(``billing.invoicing.usage``): a report reads the rollups only when they answer its question
exactly, and the events otherwise:

- not while the rollups are flagged stale (``rollups_stale``: events stored before they
  existed; ``billing db recount`` rebuilds them);
- whole hours only: the part of a window before its first whole hour or after its last one
  (a time zone off the hour, ``as_of`` mid-hour) is read from the events;
- a breakdown by a property only when it is ``type``, ``model`` or a rolled-up dimension, and
  no row of the window holds an event whose key text is not exact (``odd``: a model ``''``, a
  value that is no text, integer or boolean: SQL reads a float or an object its own way);
- a sum of a property only when no row holds a value left out of the sums (``rounded``).

Late events add to their own hour; duplicates and conflicts add nothing (only the events a
chunk inserted are rolled up); a re-cost moves the cost of the rows of the events it prices.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

HOUR_US = 3_600_000_000
BASE = ""  # the dimension of the base row (every event)
MAX_SUMMED = 10**15  # larger integer values are left out of the sums (counted in ``rounded``)
DEFAULT_DIMENSIONS = ("feature", "task", "user")
_EXACT_KEY = (str, int, bool)


def hour_of(ts: int) -> int:
    return ts // HOUR_US * HOUR_US


def key_text(value) -> str | None:
    """A property value as the rollup keys it (``str()``, as SQL reads text, integers and
    booleans: ``billing.reports.repository.property_sql``); None when it is not exact."""
    t = type(value)
    if t is str:
        return value
    if t is bool:
        return "True" if value else "False"
    if t is int:
        return str(value)
    return None


class RollupPlanner:
    """Accumulates the rollup deltas of a chunk of accepted events:
    key (customer, hour, type, model, dim, value) -> [events, cost_pico, sums, rounded, odd]."""

    def __init__(self, dimensions: Sequence[str]):
        self.dimensions = tuple(sorted(set(dimensions)))
        self.deltas: dict[tuple, list] = {}

    def add_rows(self, rows: Iterable) -> None:
        """Rows shaped like ``Prepared`` (customer, event id, type, ts, text, model, cost, properties)."""
        add = self.add
        for r in rows:
            add(r[0], r[2], r[3], r[5], r[7], r[6])

    def add(self, customer: str, etype: str, ts: int, model: str | None, props: dict, cost: int,
            count: int = 1, sums: bool = True) -> None:
        """One event (``count`` 0 and ``sums`` False: a change of its cost only)."""
        hour = ts // HOUR_US * HOUR_US
        odd = 1 if model == "" else 0
        mkey = model or ""
        summed: dict[str, int] | None = None
        rounded = 0
        if sums:
            for k, v in props.items():
                t = type(v)
                if t is int:
                    if -MAX_SUMMED < v < MAX_SUMMED:
                        if summed is None:
                            summed = {k: v}
                        else:
                            summed[k] = v
                    else:
                        rounded = 1
                elif t is float:
                    rounded = 1
        deltas = self.deltas
        key = (customer, hour, etype, mkey, BASE, "")
        self._bump(deltas, key, count, cost, summed, rounded, odd if count else 0)
        for dim in self.dimensions:
            v = props.get(dim)
            if v is None:
                continue
            text = key_text(v)
            bad = 0
            if text is None:
                text, bad = str(v)[:200], 1
            elif len(text) > 200:
                text, bad = text[:200], 1
            self._bump(deltas, (customer, hour, etype, mkey, dim, text), count, cost, summed, rounded,
                       (bad or odd) if count else 0)

    @staticmethod
    def _bump(deltas: dict, key: tuple, count: int, cost: int, summed: dict | None, rounded: int, odd: int) -> None:
        slot = deltas.get(key)
        if slot is None:
            deltas[key] = [count, cost, dict(summed) if summed else None, rounded, odd]
            return
        slot[0] += count
        slot[1] += cost
        slot[3] += rounded
        slot[4] += odd
        if summed:
            had = slot[2]
            if had is None:
                slot[2] = dict(summed)
            else:
                for k, v in summed.items():
                    had[k] = had.get(k, 0) + v
