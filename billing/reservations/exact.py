"""Meters the running counters cannot rate exactly, read from the events for the quota.

Quota decisions and the usage report read a customer's usage from the running counters
(``usage_counter``): one total per meter. Three kinds of charged meter need more
(``CompiledPlan.event_read_meters``), as the close rates them (``aggregate_sql``):

* an outcome meter with ``disputes``: an outcome disputed inside its window does not
  count, but its counter counted it;
* a ``unique_count`` meter: it has no counter;
* a sum priced by a percentage with per-transaction rules: the price needs each value, in
  time order, not only the sum;
* a meter a dimension price splits by a property's value: its counter holds only the
  total (its ``'x'`` rows are per value: the sum or count, cost and events);
* a value aggregation (``latest``, ``min``, ``avg``, ``time_weighted_sum``): it has no
  counter. A time-weighted level counts as held to the end of the period (what the period
  will bill if the level does not change: a decision never waits for the clock).

For plans with such meters the quota's state statement (``reservations.sql.state_query`` and
``batch_state_query``) carries extra rows, computed from the period's events with the
close's own conditions (``aggregate_sql._meter_condition``, every stored event):

* ``('x', meter[<US>multiplier group], 0, count, 0, cost_pico, events)``: the meter's
  totals, replacing its counter (no row: nothing counts);
* ``('t', meter[<US>multiplier group], 0, value, 0, ts, rank)``: one per valued event,
  ``rank`` its place in (ts, event id) order as the close orders transactions;
* ``('v', meter, 0, a, 0, b, 0)``: a value aggregation's rows (``store.level_sql``, the
  close's query), finished by ``billing.rating.levels``; its ``'x'`` row gives its events
  and cost.

(The zeros stand where counter rows carry the high parts of their wide totals.)

``parse_state`` keeps them aside (under ``ROWS``, a key no meter can have) and ``fold``
turns them into the state's ``MeterUsage``. Plans without such meters add nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from billing.catalog import Plan
from billing.catalog.schema import VALUE_AGGREGATIONS, Meter
from billing.store.aggregate_sql import _meter_condition, _Sql
from billing.store.level_sql import finish, value_select
from billing.quota.decide import MeterUsage

SEP = "\x1f"  # meter keys never contain it ([a-z0-9_.-])
ROWS = SEP  # where parse_state keeps these rows in a usage mapping
MICRO = Decimal(1_000_000)
PICO = Decimal(10) ** 12
_EVERY_EVENT = 2 ** 62  # no snapshot: every stored event counts
_ZERO = Decimal(0)


def _key(meter: Meter, group: str | None) -> str:
    if group is None:
        return f"'{meter.key}'"
    return f"(CASE WHEN {group} IS NULL THEN '{meter.key}' ELSE '{meter.key}{SEP}' || {group} END)"


def selects(pg: bool, plan: Plan, start_us: int, end_us: int, *, with_customer: bool,
            customer: str) -> tuple[str, list[Any]]:
    """`` UNION ALL SELECT ...`` parts for ``customer``'s event-read meters over [start, end)
    (rows start with the customer id when ``with_customer``), and their parameters."""
    sql = _Sql("postgresql" if pg else "sqlite")
    ph = sql.ph
    lead = "e.customer_id, " if with_customer else ""
    by = "e.customer_id" if with_customer else ""
    out: list[str] = []
    params: list[Any] = []
    transaction_meters = plan.compiled.transaction_meters
    for meter in plan.compiled.event_read_meters:
        window = f"e.customer_id = {ph} AND e.ts >= {ph} AND e.ts < {ph}"
        cond_params: list[Any] = []
        cond = _meter_condition(sql, meter, _EVERY_EVENT, cond_params)
        if meter.aggregation in VALUE_AGGREGATIONS:
            # a time-weighted level may come from before the period: every event before its end
            since = "" if meter.aggregation == "time_weighted_sum" else f" AND e.ts >= {ph}"
            rows = value_select(sql, meter, f"e.customer_id = {ph} AND e.ts < {ph}{since} AND {cond}",
                                start_us, end_us)
            keep = "q.k, " if with_customer else ""
            out.append(f" UNION ALL SELECT {keep}'v', '{meter.key}', 0, q.a, 0, q.b, 0 FROM ({rows}) q")
            params += [customer, end_us, *([] if since == "" else [start_us]), *cond_params]
        mult = meter.multipliers
        if meter.key in transaction_meters:
            group = sql.text(mult.property) if mult else None
            number = sql.number(meter.property)
            out.append(f" UNION ALL SELECT {lead}'t', {_key(meter, group)}, 0, {number}, 0, e.ts, "
                       f"ROW_NUMBER() OVER (ORDER BY e.ts, e.event_id) FROM usage_event e "
                       f"WHERE {window} AND {cond} AND {number} IS NOT NULL")
            params += [customer, start_us, end_us, *cond_params]
            continue
        group = sql.text(mult.property) if mult and meter.aggregation != "unique_count" else None
        value = f"COUNT(DISTINCT {sql.text(meter.property)})" if meter.aggregation == "unique_count" else "COUNT(*)"
        by_value = plan.compiled.group_meters.get(meter.key)
        if by_value is not None:  # a dimension price: a plain count or sum per value of the property
            group = sql.text(by_value)
            value = f"SUM({sql.number(meter.property)})" if meter.aggregation == "sum" else "COUNT(*)"
        keys = [k for k in (by, group) if k]
        grouping = f" GROUP BY {', '.join(keys)}" if keys else ""
        having = "" if keys else " HAVING COUNT(*) > 0"
        out.append(f" UNION ALL SELECT {lead}'x', {_key(meter, group)}, 0, {value}, 0, SUM(e.cost_pico), COUNT(*) "
                   f"FROM usage_event e WHERE {window} AND {cond}{grouping}{having}")
        params += [customer, start_us, end_us, *cond_params]
    return "".join(out), params


def fold(plan: Plan, usage: Mapping[str, MeterUsage]) -> dict[str, MeterUsage]:
    """``usage`` with the event-read meters' rows (under ``ROWS``) in place of their
    counters: totals of the disputed-aware and unique meters, the transactions of the
    per-transaction ones. ``usage`` itself is left as it is (batches share it)."""
    rows = usage.get(ROWS, ())  # type: ignore[call-overload]
    out = {k: v for k, v in usage.items() if k != ROWS}
    compiled = plan.compiled
    totals: dict[str, list] = {}
    values: dict[str, list[tuple[int, Decimal]]] = {}
    valued: dict[str, list[tuple]] = {}  # a value aggregation's rows (level_sql), by meter
    by_value: dict[str, list[tuple]] = {}  # a dimension-priced meter's rows: (value, units, cost_pico, events)
    for kind, key, a, b, c in rows:
        meter_key, sep, group = key.partition(SEP)
        meter = compiled.meter_by_key[meter_key]
        mult = meter.multipliers
        factor = (mult.values.get(group, mult.default) if sep else mult.default) if mult else 1
        if kind == "v":
            valued.setdefault(meter_key, []).append((meter_key, a, b))
            continue
        if kind == "x" and meter_key in compiled.group_meters:  # per value (a sum: the dialect's numbers)
            units = _Scale.scale(a) if meter.aggregation == "sum" else Decimal(a)
            by_value.setdefault(meter_key, []).append((group if sep else None, units, int(b or 0), int(c)))
            continue
        if kind == "x":
            slot = totals.setdefault(meter_key, [_ZERO, 0, 0])
            slot[0] += Decimal(a) * factor
            slot[1] += int(b or 0)
            slot[2] += int(c)
        else:  # 't': SQLite sums JSON numbers as micro-units, PostgreSQL as numeric (aggregate_sql._Sql.number)
            value = Decimal(a) / MICRO if isinstance(a, int) else Decimal(a)
            values.setdefault(meter_key, []).append((int(c), value * factor))
    for meter in compiled.event_read_meters:
        if meter.key in compiled.transaction_meters:
            counted = out.get(meter.key, MeterUsage())
            found = sorted(values.get(meter.key, ()))
            out[meter.key] = MeterUsage(counted.units, counted.cost, counted.events, tuple(v for _, v in found))
        elif meter.key in compiled.group_meters:
            found = sorted(by_value.get(meter.key, ()), key=lambda g: (g[0] is None, g[0] or ""))
            out[meter.key] = MeterUsage(sum((g[1] for g in found), _ZERO), Decimal(sum(g[2] for g in found)) / PICO,
                                        sum(g[3] for g in found), None,
                                        tuple((v, u, Decimal(c) / PICO, n) for v, u, c, n in found))
        else:
            units, cost, events = totals.get(meter.key, (_ZERO, 0, 0))
            if meter.aggregation in VALUE_AGGREGATIONS:
                units = finish(_Scale, meter, valued.get(meter.key, ())).get(meter.key, _ZERO)
            out[meter.key] = MeterUsage(units, Decimal(cost) / PICO, events)
    return out


class _Scale:
    """``level_sql.finish``'s dialect numbers, told apart by type: SQLite's are micro-unit
    integers, PostgreSQL's numeric (``aggregate_sql._Sql.number``)."""

    @staticmethod
    def scale(value: Any) -> Decimal:
        if value is None:
            return _ZERO
        return Decimal(value) / MICRO if isinstance(value, int) else Decimal(value)
