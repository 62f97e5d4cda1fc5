"""The quota's context statement (``reservations.sql.load_context``) reads seats and credit
grants in its own single round trip; for random seat histories, grants with effective dates
and expiries, and grants partly drawn by a close, its seats and credits equal what the one
repository (``store.grants_and_seats``) gives, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from billing.store.grants_and_seats import grant_balances, seat_histories
from billing.reservations.sql import MICRO, Connections, load_context
from tests.support.db import World, invoicing_catalog

CATALOG = invoicing_catalog()
SEPTEMBER = datetime(2026, 9, 1, tzinfo=UTC)
_customers = itertools.count(1)

cases = st.fixed_dictionaries({
    "seats": st.integers(0, 5),
    "seat_changes": st.lists(st.tuples(st.integers(1, 24 * 58), st.integers(0, 9)), max_size=4),
    "grants": st.lists(st.tuples(st.integers(1, 3_000).map(lambda c: Decimal(c) / 100), st.integers(0, 50),
                                 st.none() | st.integers(1, 40), st.booleans()), max_size=4),
    "september_requests": st.integers(0, 25),
    "now_hours": st.integers(0, 24 * 29),
})


def _expected_seats(history: list[tuple[datetime, int]], start: datetime, end: datetime, now: datetime) -> int:
    """The quota's rule, from the repository's history: the most seats held from the period
    start until now (the seats at the start, or the first recorded, when none changed since)."""
    at_start = [seats for at, seats in history if at <= start]
    since = [seats for at, seats in history if start < at < end and at <= now]
    opening = at_start[-1] if at_start else (history[0][1] if history else 1)
    return max([opening, *since])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases)
def test_quota_context_reads_seats_and_grants_as_the_repository(module_engine, case):
    world = World(module_engine, CATALOG, SEPTEMBER)
    cid = f"q{next(_customers)}"
    world.accounts.create_customer(cid, now=SEPTEMBER)
    sub = world.accounts.subscribe(cid, "seats-requests", at=SEPTEMBER, seats=case["seats"])
    for hours, seats in sorted(case["seat_changes"]):
        world.accounts.change_seats(cid, seats, at=SEPTEMBER + timedelta(hours=hours))
    for n, (amount, starts, lasts, scoped) in enumerate(case["grants"]):
        at = SEPTEMBER + timedelta(days=starts)
        world.accounts.grant_credits(cid, amount, at=at, grant_id=f"{cid}-g{n}",
                                     expires_at=at + timedelta(days=lasts) if lasts else None,
                                     applies_to=("requests",) if scoped else None)
    october = SEPTEMBER.replace(month=10)
    world.at(october)
    world.record([{"id": f"{cid}-{i}", "customer": cid, "type": "request", "timestamp": SEPTEMBER.isoformat(),
                   "properties": {}} for i in range(case["september_requests"])])
    world.invoicing.close(october)  # draws September's requests from the grants in force
    now = october + timedelta(hours=case["now_hours"])

    conns = Connections(module_engine)
    try:
        with conns.read() as conn:
            ctx = load_context(conns, conn, CATALOG, cid, now)
    finally:
        conns.close()
    with module_engine.connect() as conn:
        history = seat_histories(conn, [sub.id]).get(sub.id, [])
        grants = grant_balances(conn, [cid]).get(cid, [])
    event("a grant partly drawn" if any(b < g.amount_micro for g, b in grants) else "no grant drawn")
    assert ctx.seats == _expected_seats(history, ctx.period.start, ctx.period.end, now)
    assert ctx.credits == {
        g.id: (Decimal(balance) / MICRO, tuple(g.applies_to.split(",")) if g.applies_to else None)
        for g, balance in grants
        if g.effective_at <= now and (g.expires_at is None or g.expires_at > now) and balance > 0}
