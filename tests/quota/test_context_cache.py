"""A cached quota context is never staler than a fresh one (``customer.context_version``,
``billing.store.context_stamp``), and loading many contexts at once reads them equal to one
at a time (``billing.reservations.context_sql``).

Server A (a ``Quota`` caching contexts for an hour) has just decided for a customer; "server
B" (any other writer: ``Accounts``, the budgets service, a hand-written UPDATE) changes what
the customer may do; A's very next check and reservation answer as a fresh context would.
On SQLite (the local check path) and PostgreSQL (batched checks)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

from sqlalchemy import text

from billing.budgets.service import Budgets
from billing.ledger.accounts import Accounts
from billing.reservations.holds import Quota
from billing.contracts.service import Contracts
from billing.reservations.budget_sql import BUDGET_COLUMNS
from billing.reservations.sql import _context, load_context, load_contexts, run_all
from billing.store.models import Invoice
from tests.support.quota import NOW, T0, Clock, catalog

CAT = catalog()
HOUR = 3600.0


def server_a(engine, customer: str = "acme", plan: str = "team-advance") -> tuple[Quota, Accounts]:
    acc = Accounts(engine, CAT)
    acc.create_customer(customer, now=T0)
    acc.subscribe(customer, plan, at=T0)
    q = Quota(engine, CAT, clock=Clock(), context_ttl=HOUR)
    assert q.check(customer, "requests", 150).outcome == "allow"  # team-advance: overage is priced
    assert q._cached(customer, NOW) is not None  # A holds the context now
    return q, acc


def test_a_plan_changed_elsewhere_is_seen_by_the_next_check_and_reserve(any_engine):
    q, acc = server_a(any_engine)
    acc.change_plan("acme", "blocky", at=NOW - timedelta(minutes=1))  # blocks past 100 requests
    d = q.check("acme", "requests", 150)
    assert d.outcome == "deny", d
    assert not q.reserve("acme", "requests", 150).granted
    assert q.reserve("acme", "requests", 100).granted  # the new plan's 100, not the old plan's overage
    q.close()


def test_a_hand_written_dunning_update_is_seen_at_once(any_engine):
    q, _ = server_a(any_engine)
    with any_engine.begin() as conn:  # no service call: the trigger alone bumps the version
        conn.execute(Invoice.__table__.insert().values(
            dedupe_key="x", customer_id="acme", plan_id="team-advance", plan_version=1, currency="USD",
            period_start=T0, period_end=T0, created_at=T0, status="finalized",
            payment_failed_at=NOW - timedelta(days=30)))
    assert q.check("acme", "requests").reason == "payment_overdue"
    with any_engine.begin() as conn:
        conn.execute(text("UPDATE invoice SET status = 'paid' WHERE customer_id = 'acme'"))
    assert q.check("acme", "requests").outcome == "allow"
    q.close()


def test_a_budget_and_a_cost_guard_added_elsewhere_deny_at_once(any_engine):
    q, acc = server_a(any_engine)
    Budgets(any_engine, CAT).create("acme", {"name": "tiny", "measure": "units", "meter": "requests",
                                            "amount": "10", "window": "monthly", "enforcement": "hard"})
    assert q.check("acme", "requests", 150).outcome == "deny"
    q2, acc2 = server_a(any_engine, "beta")
    acc2.set_cost_guard("beta", {"cost_cap": {"amount": "0.01", "on_breach": {"policy": "deny"}}})
    assert q2.check("beta", "requests", 1, cost="5").outcome == "deny"
    q.close()
    q2.close()


def test_an_unchanged_context_stays_cached(any_engine):
    q, _ = server_a(any_engine)
    first = q._cached("acme", NOW)
    for _ in range(3):
        assert q.check("acme", "requests", 150).outcome == "allow"
    assert q._cached("acme", NOW) is first  # same object: never reloaded
    q.close()


def test_a_scheduled_change_ends_the_cached_context_when_it_starts(any_engine):
    """A subscription starting later (no write when it starts) ends the cached context then."""
    q, acc = server_a(any_engine)
    acc.change_plan("acme", "blocky", at=NOW + timedelta(hours=1))
    assert q.check("acme", "requests", 150).outcome == "allow"  # reloaded (the write) and still allowed
    q.clock.now = NOW + timedelta(hours=1, seconds=1)
    assert q.check("acme", "requests", 150).outcome == "deny"
    q.close()


def test_many_contexts_load_equal_to_one_at_a_time(any_engine):
    acc = Accounts(any_engine, CAT)
    customers = [f"c{i}" for i in range(6)]
    for i, c in enumerate(customers):
        acc.create_customer(c, now=T0, timezone="Europe/Paris" if i % 2 else "UTC")
        acc.subscribe(c, "team-advance" if i % 3 else "support-chatbot", at=T0, seats=1 + i)
        if i % 2:
            acc.change_seats(c, 3 + i, at=NOW - timedelta(days=2))
            acc.grant_credits(c, D("2.50"), at=T0, expires_at=NOW + timedelta(days=3))
        if i == 4:
            Budgets(any_engine, CAT).create(c, {"name": "b", "measure": "cost", "amount": "100",
                                                "window": "daily", "enforcement": "hard"})
    with any_engine.begin() as conn:
        conn.execute(Invoice.__table__.insert().values(
            dedupe_key="y", customer_id="c3", plan_id="team-advance", plan_version=1, currency="USD",
            period_start=T0, period_end=T0, created_at=T0, status="finalized",
            payment_failed_at=NOW - timedelta(days=1)))
    q = Quota(any_engine, CAT, clock=Clock())
    with q.conns.read() as conn:
        many = load_contexts(q.conns, conn, CAT, [*customers, "nobody"], NOW)
        for c in customers:
            assert many[c] == load_context(q.conns, conn, CAT, c, NOW), c
    assert many["nobody"].code == "customer_not_found"
    assert many["c1"].seats == 4 and many["c1"].credits and many["c4"].budgets and many["c3"].payment_failed_at
    assert many["c1"].valid_until == NOW + timedelta(days=3)  # the credit's expiry
    q.close()


# the six sets of a context read table by table, as plain rows (the reference the one
# aggregated statement of ``billing.reservations.context_sql`` is held equal to)
_BY_TABLE = (
    f"SELECT c.timezone, c.cost_guard, {BUDGET_COLUMNS}, c.context_version FROM customer c "
    "LEFT JOIN budget b ON b.customer_id = c.id WHERE c.id = ?",
    "SELECT id, plan_id, plan_version, anchor_at, started_at, ended_at FROM subscription WHERE customer_id = ?",
    "SELECT sc.subscription_id, sc.effective_at, sc.seats, sc.id FROM seat_change sc "
    "JOIN subscription s ON s.id = sc.subscription_id WHERE s.customer_id = ?",
    "SELECT payment_failed_at FROM invoice WHERE customer_id = ? AND status = 'finalized' AND kind = 'invoice' "
    "AND payment_failed_at IS NOT NULL",
    "SELECT g.id, g.amount_micro, g.applies_to, g.effective_at, g.expires_at, "
    "(SELECT COALESCE(SUM(b.amount_micro), 0) FROM credit_burn b WHERE b.grant_id = g.id) "
    "FROM credit_grant g WHERE g.customer_id = ?",
    "SELECT o.subscription_id, o.path, o.value, o.starts_at, o.ends_at, o.id FROM contract_override o "
    "JOIN subscription s ON s.id = o.subscription_id WHERE s.customer_id = ?",
)


def test_the_one_context_statement_reads_what_the_tables_say(any_engine):
    """Contexts with budgets, seat changes, credits partly burned, a failed payment and a
    contract override: loaded through the one aggregated statement, each equals the context
    parsed from its six sets of rows read table by table."""
    acc = Accounts(any_engine, CAT)
    customers = [f"k{i}" for i in range(5)]
    for i, c in enumerate(customers):
        acc.create_customer(c, now=T0, timezone="America/New_York" if i % 2 else "UTC")
        acc.subscribe(c, "team-advance", at=T0, seats=2 + i)
        acc.change_seats(c, 5 + i, at=NOW - timedelta(days=1 + i))
        acc.grant_credits(c, D("7.25") + i, at=T0, expires_at=NOW + timedelta(days=2 + i))
        Budgets(any_engine, CAT).create(c, {"name": "b1", "measure": "cost", "amount": f"{10 + i}.5",
                                            "window": "daily", "enforcement": "hard"})
        Budgets(any_engine, CAT).create(c, {"name": "b2", "measure": "units", "meter": "requests",
                                            "amount": "100", "window": "monthly", "enforcement": "soft"})
    with any_engine.begin() as conn:
        conn.execute(Invoice.__table__.insert().values(
            dedupe_key="z", customer_id="k2", plan_id="team-advance", plan_version=1, currency="USD",
            period_start=T0, period_end=T0, created_at=T0, status="finalized",
            payment_failed_at=NOW - timedelta(days=3)))
        conn.execute(text("INSERT INTO credit_burn (grant_id, amount_micro, invoice_id) SELECT id, 1250000, "
                          "(SELECT id FROM invoice WHERE dedupe_key = 'z') FROM credit_grant WHERE customer_id = 'k3'"))
    with any_engine.connect() as conn:
        subs = {c: i for c, i in conn.execute(text("SELECT customer_id, id FROM subscription WHERE customer_id = 'k1'"))}
    Contracts(any_engine, CAT).add_overrides(subs["k1"], [
        {"path": "charges/requests/price/unit_price", "value": "0.02", "starts_at": T0},
        {"path": "charges/requests/included", "value": {"per_seat": 50}, "starts_at": T0,
         "ends_at": NOW + timedelta(days=9)}], now=NOW)
    q = Quota(any_engine, CAT, clock=Clock())
    with q.conns.read() as conn:
        many = load_contexts(q.conns, conn, CAT, customers, NOW)
        for c in customers:
            rows = run_all(q.conns, conn, [(sql, (c,)) for sql in _BY_TABLE])
            assert many[c] == _context(CAT, c, NOW, rows), c
    assert len(many["k0"].budgets) == 2 and many["k2"].payment_failed_at is not None
    assert many["k3"].credits and all(b < D("7.25") + 3 for b, _ in many["k3"].credits.values())
    assert many["k1"].plan is not CAT.get("team-advance", 1) and many["k1"].valid_until <= NOW + timedelta(days=3)
    q.close()


def test_the_cache_keeps_its_bound_and_lets_expired_contexts_go(any_engine):
    """At most ``context_cache_max`` contexts, the oldest loaded leaving first; one loaded
    after the others expired takes their place (the cache holds the last ``context_ttl``
    seconds' customers, not every customer ever checked); hits and misses are counted."""
    acc = Accounts(any_engine, CAT)
    customers = [f"m{i}" for i in range(6)]
    for c in customers:
        acc.create_customer(c, now=T0)
        acc.subscribe(c, "team-advance", at=T0)
    q = Quota(any_engine, CAT, clock=Clock(), context_ttl=60.0, context_cache_max=3)
    for c in customers[:5]:
        assert q.check(c, "requests").outcome == "allow"
    assert list(q._ctx_cache) == customers[2:5]
    assert (q.context_hits, q.context_misses) == (0, 5)
    q.check("m4", "requests")
    assert (q.context_hits, q.context_misses) == (1, 5)
    q.clock.now = NOW + timedelta(seconds=61)  # all three expired
    q.check("m5", "requests")
    assert len(q._ctx_cache) < 3 and "m5" in q._ctx_cache and "m2" not in q._ctx_cache
    q.close()
