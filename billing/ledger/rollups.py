"""Hourly rollups: what an accepted event adds to ``usage_rollup`` (pure; the SQL is in
``billing.store.rollup_sql``).

An event adds to one row, keyed by (customer, hour, type, model, dims): ``dims`` is the
JSON object of the rolled-up properties it carries (``rollup_dimension``: ``feature`` and
the ``BILLING_ROLLUP_DIMENSIONS`` of the deployment, e.g. ``user``, ``task``) with their
values as text. Each row holds the events, their provider cost, their token counts and the
sums of every other integer property. A breakdown by one dimension, or by two (``--by team
--by model``), groups the rows.

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
  value that is no text, integer or boolean -- SQL reads a float or an object its own way --
  or dimensions too long for a key);
- token counts only when no row holds a token value left out of its column (``rounded``: a
  non-integer count); ``sums`` holds the integer values of the other properties only (a
  question about a property with other values reads the events).

Late events add to their own hour; duplicates and conflicts add nothing (only the events a
chunk inserted are rolled up); a re-cost moves the cost of the rows of the events it prices.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

HOUR_US = 3_600_000_000
MAX_SUMMED = 10**15  # larger integer values are left out of the sums
DEFAULT_DIMENSIONS = ("feature",)  # user, task...: BILLING_ROLLUP_DIMENSIONS (a row per value costs ingestion)
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


TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
_TOKEN_SET = frozenset(TOKENS)
_TOKEN_SLOT = {t: 2 + i for i, t in enumerate(TOKENS)}  # a delta's slot of each token count
_MAX_DIMS_BYTES = 400  # longer dims are cut (and the row marked odd): a key must fit an index entry


def dims_text(dims: Sequence[str], values: Sequence) -> tuple[str, int]:
    """The ``dims`` key of an event's dimension values (None: absent), and 1 when it is not exact."""
    parts, odd = [], 0
    for name, v in zip(dims, values):
        if v is None:
            continue
        text = key_text(v)
        if text is None:
            text, odd = str(v), 1
        parts.append(f"{json.dumps(name)}:{json.dumps(text, ensure_ascii=False)}")
    out = "{" + ",".join(parts) + "}"
    if len(out) > _MAX_DIMS_BYTES // 4 and len(out.encode()) > _MAX_DIMS_BYTES:
        out = out.encode()[:_MAX_DIMS_BYTES].decode(errors="ignore")
        odd = 1
    return out, odd


class RollupPlanner:
    """Accumulates the rollup deltas of a chunk of accepted events: key (customer, hour,
    type, model, dims) -> [events, cost_pico, the five token sums (``TOKENS``),
    integer sums of the other properties, rounded, odd, tokened] (the token sums apart: the
    upsert's row is built without looking them up; ``tokened``: the events carrying a token
    count, as the margin report's AI / other cost split tells them apart)."""

    def __init__(self, dimensions: Sequence[str]):
        self.dimensions = tuple(sorted(set(dimensions)))
        self.deltas: dict[tuple, list] = {}
        self._texts: dict[tuple, tuple[str, int]] = {}  # dimension values (all text) -> dims key

    def add_rows(self, rows: Iterable) -> None:
        """Rows shaped like ``Prepared`` (customer, event id, type, ts, text, model, cost,
        properties): ``add`` of each (inlined: the ingestion hot path; a test holds it equal)."""
        dimensions, texts, deltas = self.dimensions, self._texts, self.deltas
        for r in rows:
            props = r[7]
            values = tuple(map(props.get, dimensions))
            found = texts.get(values)
            if found is None or r[5] == "":
                self.add(r[0], r[2], r[3], r[5], props, r[6])
                continue
            key = (r[0], r[3] // HOUR_US * HOUR_US, r[2], r[5] or "", found[0])
            slot = deltas.get(key)
            if slot is None:
                slot = deltas[key] = [0, 0, 0, 0, 0, 0, 0, {}, 0, 0, 0]
            slot[0] += 1
            slot[1] += r[6]
            slot[9] += found[1]
            _add_sums(slot, props)

    def add(self, customer: str, etype: str, ts: int, model: str | None, props: dict, cost: int,
            count: int = 1, sums: bool = True) -> None:
        """One event (``count`` 0 and ``sums`` False: a change of its cost only)."""
        values = tuple(map(props.get, self.dimensions))
        texts = self._texts
        found = texts.get(values)
        if found is None:
            found = dims_text(self.dimensions, values)
            if all(type(v) is str or v is None for v in values):  # (True == 1: only text is cached)
                if len(texts) > 100_000:
                    texts.clear()
                texts[values] = found
        dims, odd = found
        if model == "":
            odd = 1
        key = (customer, ts // HOUR_US * HOUR_US, etype, model or "", dims)
        slot = self.deltas.get(key)
        if slot is None:
            slot = self.deltas[key] = [0, 0, 0, 0, 0, 0, 0, {}, 0, 0, 0]
        slot[0] += count
        slot[1] += cost
        if count:
            slot[9] += odd
        if not sums:
            return
        _add_sums(slot, props)


def _add_sums(slot: list, props: dict) -> None:
    """Add an event's integer properties to its rollup slot: token counts in their own
    slots, every other integer in ``slot[7]``; a token value that is no integer (or too
    large to sum exactly) counts in ``slot[8]`` (``rounded``); an event carrying any token
    count (a value that is not null) counts in ``slot[10]`` (``tokened``)."""
    if not _TOKEN_SET.isdisjoint(props) and any(props.get(t) is not None for t in TOKENS):
        slot[10] += 1
    other = slot[7]
    for k, v in props.items():
        t = type(v)
        if t is int:
            if -MAX_SUMMED < v < MAX_SUMMED:
                i = _TOKEN_SLOT.get(k)
                if i is None:
                    other[k] = other.get(k, 0) + v
                else:
                    slot[i] += v
            elif k in _TOKEN_SET:
                slot[8] += 1
        elif t is float and k in _TOKEN_SET:
            slot[8] += 1
