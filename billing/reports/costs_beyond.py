"""Costs beyond tokens in the margin report: per customer, the provider cost split into
**AI cost** (events carrying token counts: model calls, embeddings) and **other cost**
(events without tokens: tool calls, vector-store queries, web searches, any unit the cost
book prices per call, costs the app reports itself); the plan's fixed monthly **overhead**
(``billing.catalog.overhead``: per seat, prorated over the seat history; per distinct
``user``, counted for the customers whose plan charges it -- ``users`` is None for the
others); and, when the customer has outcome events (the event types of the plan's
outcome meters -- those with ``disputes`` -- and ``outcome``), the **cost per outcome**
beside the revenue per outcome (cost per resolved ticket). Margin after overhead = revenue -
cost - overhead. Additive to ``reports.margins``. The split and the outcomes come from the
hourly rollups where they are exact (``billing.reports.split_repository``; the margin report
reads them in the same scan of the rollups as its costs and passes them as ``known``), the
distinct users from the events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from billing.catalog import Catalog
from billing.money import dec_str
from billing.rating.periods import Period, prorate_fraction, seat_segments
from billing.reports.split_repository import SplitRow, cost_split, distinct_users
from billing.store.grants_and_seats import seat_histories
from billing.store.types import to_us

ZERO = Decimal(0)
PICO = Decimal(10) ** 12


@dataclass(frozen=True)
class CostSplit:
    ai_cost: Decimal
    other_cost: Decimal
    overhead: Decimal
    users: int | None  # distinct ``user`` values: counted only where the plan charges overhead per user
    outcomes: int

    def to_json(self, revenue: Decimal, cost: Decimal) -> dict:
        per = (lambda v: dec_str((v / self.outcomes).quantize(Decimal("0.000001")))) if self.outcomes else None
        return {"ai_cost": dec_str(self.ai_cost), "other_cost": dec_str(self.other_cost),
                "overhead": dec_str(self.overhead), "users": self.users,
                "margin_after_overhead": dec_str(revenue - cost - self.overhead), "outcomes": self.outcomes,
                "cost_per_outcome": per(cost) if per else None, "revenue_per_outcome": per(revenue) if per else None}


def outcome_types(catalog: Catalog) -> list[str]:
    return sorted({"outcome"} | {m.event_type for p in catalog.all() for m in p.meters if m.disputes})


def splits(conn, catalog: Catalog, periods: dict[str, Period], subs: list, as_of: datetime,
           rollups: bool = True, known: Mapping[Period, list[SplitRow]] | None = None) -> dict[str, CostSplit]:
    """customer -> its cost split and overhead over its period up to ``as_of`` (``rollups``
    False: from the events even where the rollups are exact). ``known``: the split rows of
    the periods already read (``split_repository.costs_and_split``)."""
    by_zone: dict[Period, list[str]] = defaultdict(list)
    for customer, p in periods.items():
        by_zone[p].append(customer)
    types = outcome_types(catalog)
    mine = [s for s in subs if (p := periods.get(s.customer_id)) is not None
            and s.started_at < p.end and (s.ended_at is None or s.ended_at > p.start)]
    per_user = {s.customer_id for s in mine
                if (spec := catalog.get(s.plan_id, s.plan_version).overhead) is not None and spec.per_user}
    rows = {}
    users: dict[str, int] = {}
    for p, members in by_zone.items():
        end = min(p.end, as_of)
        if end > p.start:
            only = members if len(by_zone) > 1 else None
            got = known.get(p) if known else None
            if got is None:
                got = cost_split(conn, to_us(p.start), to_us(end), types, only, rollups)
            rows.update({r.customer: r for r in got})
            counted = sorted(per_user.intersection(members))
            if counted:
                users.update(distinct_users(conn, to_us(p.start), to_us(end), counted))
    seats = seat_histories(conn, [s.id for s in mine]) if mine else {}
    overhead: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for s in mine:
        spec = catalog.get(s.plan_id, s.plan_version).overhead
        if spec is None:
            continue
        period = periods[s.customer_id]
        start, end = max(s.started_at, period.start), min(s.ended_at or period.end, period.end)
        if spec.per_seat:
            for seg in seat_segments(seats.get(s.id) or [(s.started_at, 1)], period):
                if seg.seats and seg.start < end and seg.end > start:
                    overhead[s.customer_id] += spec.per_seat * seg.seats * prorate_fraction(
                        max(seg.start, start), min(seg.end, end), period)
        if spec.per_user and s.customer_id in users:
            overhead[s.customer_id] += spec.per_user * users[s.customer_id]
    out = {}
    for customer in set(rows) | set(overhead):
        r = rows.get(customer)
        out[customer] = CostSplit(Decimal(r.ai_cost_pico) / PICO if r else ZERO,
                                  Decimal(r.other_cost_pico) / PICO if r else ZERO,
                                  overhead.get(customer, ZERO),
                                  users.get(customer, 0) if customer in per_user else None, r.outcomes if r else 0)
    return out
