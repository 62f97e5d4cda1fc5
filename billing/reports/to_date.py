"""Rate subscriptions to date: what each subscription's part of an open period bills so far.

Each subscription's window in its customer's period, rated to ``as_of`` by the service the
close rates with (``billing.invoicing.windows``): the meters over ``[window start,
min(window end, as_of))``, the seats, credit grants, proration and trial as the close will
apply them. Recurring fees in advance count in full. Read-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Connection

from billing.catalog import Catalog
from billing.invoicing.windows import RatedWindow, Usage, Window, rate_windows, window_of
from billing.rating.periods import Period
from billing.reports.rollup_usage import rollup_counters


def rate_to_date(conn: Connection, catalog: Catalog, subs: list, periods: Mapping[str, Period], as_of: datetime,
                 watermark: int, scale: Mapping[str, Decimal] | None = None, rollups: bool = True,
                 known: Mapping[tuple, Usage] | None = None) -> list[RatedWindow]:
    """Every subscription's window in its customer's period, rated on the events up to
    ``as_of`` (and ``id <= watermark``), by customer and start. Windows that start after
    ``as_of`` are left out. ``rollups``: the usage of plans the hourly rollups count exactly
    from them (``billing.reports.rollup_usage``; they hold every committed event).
    ``known``: the usage of windows already read (``usage_read``, keyed by ``window_key``:
    a forecast rates the same windows again, scaled, without reading their usage twice)."""
    windows = []
    for sub in subs:
        period = periods.get(sub.customer_id)
        span = window_of(sub, period) if period is not None else None
        if span is None or span[0] >= as_of:
            continue
        windows.append(Window(sub, catalog.get(sub.plan_id, sub.plan_version), period, span[0], span[1],
                              min(span[1], as_of)))
    if known is not None:
        def counted(w: Window) -> Usage | None:
            return known.get(window_key(w))
    else:
        counted = rollup_counters(conn, windows, watermark) if rollups and windows else None
    rated = rate_windows(conn, windows, watermark, from_counters=counted, scale=scale, plans=catalog.get)
    rated.sort(key=lambda w: (w.customer, w.start, w.sub.id))
    return rated


def window_key(w: Window | RatedWindow) -> tuple:
    """What names a window to date: its subscription, start and end of the rating."""
    return w.sub.id, w.start, w.rated_until


def usage_read(rated: list[RatedWindow]) -> dict[tuple, Usage]:
    """The usage each window was rated on (meters, provider cost), by ``window_key``: the
    input of a second rating of the same windows (``rate_to_date``'s ``known``)."""
    return {window_key(w): (w.usage, w.invoice.provider_cost) for w in rated if w.window.part == "whole"}
