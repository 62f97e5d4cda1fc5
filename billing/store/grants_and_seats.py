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
from billing.store.pages import Listed, Page, page_of

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
        for g, remaining in _balances(conn, grants):
            out[g.customer_id].append((g, remaining))
    return out


def _balances(conn: Connection, grants: Sequence[CreditGrantRow]) -> list[GrantBalance]:
    """Each grant with what remains of it: its amount less what finalized invoices drew."""
    burned: dict[str, int] = {}
    for part in _chunks(sorted({g.id for g in grants})):
        burned.update(conn.execute(select(CreditBurn.grant_id, func.sum(CreditBurn.amount_micro))
                                   .where(CreditBurn.grant_id.in_(part)).group_by(CreditBurn.grant_id)).all())
    return [(g, g.amount_micro - int(burned.get(g.id) or 0)) for g in grants]


def grants_page(conn: Connection, *, limit: int, after=None, before=None,
                customer: str | None = None) -> tuple[Page, list[GrantBalance]]:
    """A page of credit grants in the order of every list (``billing.store.pages``), each
    with its balance."""
    c = CreditGrantRow.__table__.c
    page = page_of(conn, Listed(select(CreditGrantRow.__table__), c.created_at, c.id),
                   [] if customer is None else [c.customer_id == customer], limit, after, before)
    return page, _balances(conn, [CreditGrantRow.model_validate(r._mapping) for r in page.rows])


def credit_grant(conn: Connection, grant_id: str) -> GrantBalance | None:
    """One grant with its balance (None: no such grant)."""
    row = conn.execute(select(CreditGrantRow).where(CreditGrantRow.id == grant_id)).first()
    return None if row is None else _balances(conn, [CreditGrantRow.model_validate(row._mapping)])[0]
