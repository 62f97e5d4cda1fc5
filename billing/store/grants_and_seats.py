"""The one set of queries for credit grants (with their balances) and seat histories, by
the chunk of customers or subscriptions: the close, rating to date (margins, forecasts),
history simulations and plan changes read them here. The quota's context statement
(``reservations.sql``) reads the same rows in its single round trip; a property test holds
its seats and credits equal to these (``tests/invoicing/test_windows_quota_context.py``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, func, select

from billing.store.driver_rows import datetime_reader, driver_rows
from billing.store.models import CreditBurn, CreditGrantRow

_CHUNK = 500

SeatHistory = list[tuple[datetime, int]]  # (effective at, seats), in effect order
GrantBalance = tuple[CreditGrantRow, int]  # (grant, remaining micro-units)


def _chunks(items: Sequence, size: int = _CHUNK):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def seat_histories(conn: Connection, subscription_ids: Sequence[int]) -> dict[int, SeatHistory]:
    """subscription -> its seat changes in effect order (absent: none recorded)."""
    out: dict[int, SeatHistory] = defaultdict(list)
    dt = datetime_reader(conn)
    for part in _chunks(sorted(set(subscription_ids))):
        rows = driver_rows(conn, f"SELECT subscription_id, effective_at, seats FROM seat_change WHERE subscription_id "
                                 f"IN ({','.join(['?'] * len(part))}) ORDER BY effective_at, id", part)
        for sid, at, seats in rows:
            out[sid].append((dt(at), seats))
    return out


def grant_balances(conn: Connection, customer_ids: Sequence[str]) -> dict[str, list[GrantBalance]]:
    """customer -> [(grant, remaining micro-units)] in grant id order, every grant (spent and
    expired ones too: the callers decide what a grant may still cover)."""
    out: dict[str, list[GrantBalance]] = defaultdict(list)
    for part in _chunks(sorted(set(customer_ids))):
        grants = [CreditGrantRow.model_validate(r._mapping) for r in conn.execute(
            select(CreditGrantRow).where(CreditGrantRow.customer_id.in_(part))
            .order_by(CreditGrantRow.customer_id, CreditGrantRow.id))]
        if not grants:
            continue
        burned = dict(conn.execute(select(CreditBurn.grant_id, func.sum(CreditBurn.amount_micro))
                                   .where(CreditBurn.grant_id.in_([g.id for g in grants]))
                                   .group_by(CreditBurn.grant_id)).all())
        for g in grants:
            out[g.customer_id].append((g, g.amount_micro - int(burned.get(g.id) or 0)))
    return out
