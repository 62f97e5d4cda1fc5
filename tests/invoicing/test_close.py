"""Closing periods into invoices (``Invoicing.close``) on SQLite and PostgreSQL: idempotent
runs, gap-free numbers, immutable finalized documents, late events as adjustments on the
next invoice, disputes as credit notes, payment-state transitions, seat and plan changes
mid-period, cancellation, and prepaid credit burned down without ever over-drawing."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlmodel import Session, func, select

from billing.errors import BillingError, ErrorCode
from billing.store.partitions import ensure_range
from billing.store.models import CreditBurn, Invoice
from tests.support.db import World, documents, invoicing_catalog

CATALOG = invoicing_catalog()
_ids = itertools.count(1)


def d(month: int, day: int, hour: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def ev(customer: str, ts: datetime, etype: str = "request", **props) -> dict:
    return {"id": f"e{next(_ids)}", "customer": customer, "type": etype, "timestamp": ts.isoformat(),
            "properties": props}


@pytest.fixture
def world(engine):
    return World(engine, CATALOG, d(10, 1))


def customer(world: World, cid: str, plan: str, *, at: datetime | None = None, seats: int = 1) -> None:
    world.accounts.create_customer(cid, now=at or world.now)
    world.accounts.subscribe(cid, plan, at=at or world.now, seats=seats)


def close(world: World, when: datetime):
    world.at(when)
    return world.invoicing.close(when)


def docs_of(world: World, cid: str | None = None) -> list[tuple]:
    return [doc for doc in documents(world.engine) if cid is None or doc[4] == cid]


def lines_of(doc) -> list[tuple[str, str, int]]:
    """(kind, key, amount_minor) of a document's lines."""
    return [(kind, key, amount) for _, kind, key, _, _, amount, _, _ in doc[10]]


def billed(world: World, cid: str, key: str, start: datetime, end: datetime) -> int:
    """Minor units billed for ``key`` over the service window [start, end), across every
    finalized or paid document (invoices, adjustments, credit notes)."""
    return sum(amount for doc in docs_of(world, cid) if doc[3] in ("finalized", "paid")
               for _, _, k, _, _, amount, s, e in doc[10] if k == key and (s, e) == (start, end))


def test_close_is_idempotent(world):
    customer(world, "p", "copilot-premium")
    world.at(d(10, 20))
    world.record([ev("p", d(10, 5), model="claude-opus-4-1") for _ in range(40)])  # 400 premium requests
    first = close(world, d(11, 1))
    assert len(first.invoices) == 1 and first.credit_notes == []
    snapshot = docs_of(world)
    (doc,) = snapshot
    assert doc[1] == "INV-000001" and doc[3] == "finalized"
    assert lines_of(doc) == [("fee", "subscription", 1000), ("usage", "premium_requests", 0),
                             ("usage", "premium_requests", 400)]  # 100 past the 300 included, at $0.04
    assert doc[8] == 1400 == sum(amount for _, _, amount in lines_of(doc))

    again = close(world, d(11, 1))
    assert (again.invoices, again.credit_notes, again.adjusted_periods) == ([], [], 0)
    assert close(world, d(11, 15)).invoices == []  # mid-period: nothing is due
    assert close(world, d(10, 15)).invoices == []  # an earlier as_of: nothing either
    assert docs_of(world) == snapshot


def test_numbers_are_sequential_and_gap_free(world):
    for cid in ("a", "b", "c"):
        customer(world, cid, "seats-requests")
    world.at(d(10, 20))
    world.record([ev(cid, d(10, 2)) for cid in ("a", "b", "c")])
    close(world, d(11, 1))
    close(world, d(11, 1))
    close(world, d(12, 1))
    numbers = [doc[1] for doc in docs_of(world) if doc[2] == "invoice"]
    assert numbers == [f"INV-{n:06d}" for n in range(1, 7)]


def test_late_event_lands_on_the_next_invoice_once(world):
    customer(world, "a", "seats-requests")
    world.at(d(10, 20))
    world.record([ev("a", d(10, 5)) for _ in range(3)])
    close(world, d(11, 1))
    october = docs_of(world)
    assert lines_of(october[0]) == [("fee", "seat", 1000), ("usage", "requests", 300)]

    world.at(d(11, 5))
    assert world.record([ev("a", d(10, 6)), ev("a", d(10, 31, 23))]).accepted == 2  # late for October
    world.record([ev("a", d(11, 2))])
    mid = close(world, d(11, 6))  # nothing to carry the adjustment yet: it waits
    assert (mid.invoices, mid.credit_notes) == ([], [])
    assert docs_of(world) == october  # finalized: unchanged

    world.at(d(11, 20))
    world.record([ev("a", d(10, 7))])  # one more late event before the next invoice
    close(world, d(12, 1))
    assert docs_of(world)[0] == october[0]
    november = docs_of(world)[1]
    assert november[6:8] == (d(11, 1), d(12, 1))
    assert lines_of(november) == [("fee", "seat", 1000), ("usage", "requests", 100), ("adjustment", "requests", 300)]
    adjustment = november[10][2]
    assert (adjustment[6], adjustment[7]) == (d(10, 1), d(11, 1))  # it bills October's service
    assert billed(world, "a", "requests", d(10, 1), d(11, 1)) == 600  # 6 October requests, once each

    snapshot = docs_of(world)
    close(world, d(12, 1))
    close(world, d(12, 20))
    close(world, d(1, 1, year=2027))
    assert docs_of(world)[:2] == snapshot
    assert billed(world, "a", "requests", d(10, 1), d(11, 1)) == 600  # never billed twice
    assert [lines_of(doc) for doc in docs_of(world)[2:]] == [[("fee", "seat", 1000), ("usage", "requests", 0)]]


def test_late_events_in_two_closed_periods_of_an_ended_subscription(world):
    customer(world, "r", "support-resolutions", at=d(9, 1))
    outcome = {"outcome": "resolution"}
    world.at(d(10, 19))
    world.record([ev("r", d(9, 2), "outcome", outcome_id="s1", **outcome),
                  ev("r", d(10, 2), "outcome", outcome_id="o1", **outcome)])
    world.accounts.cancel("r", at=d(10, 20))
    close(world, d(10, 21))
    september, final = docs_of(world)
    assert (september[6:8], final[6:8]) == ((d(9, 1), d(10, 1)), (d(10, 1), d(10, 20)))

    world.at(d(10, 22))  # late events for both closed periods, in one batch
    world.record([ev("r", d(9, 3), "outcome", outcome_id="s2", **outcome),
                  ev("r", d(10, 3), "outcome", outcome_id="o2", **outcome)])
    result = close(world, d(10, 22))
    assert len(result.invoices) == 2  # standalone adjustment invoices: the subscription has ended
    world.at(d(10, 23))
    world.record([ev("r", d(9, 4), "outcome", outcome_id="s3", **outcome)])
    close(world, d(10, 23))
    close(world, d(10, 24))
    close(world, d(12, 1))
    assert billed(world, "r", "resolutions", d(9, 1), d(10, 1)) == 3 * 99  # each resolution once
    assert billed(world, "r", "resolutions", d(10, 1), d(10, 20)) == 2 * 99
    assert docs_of(world)[:2] == [september, final]
    assert [doc[1] for doc in docs_of(world)] == [f"INV-{n:06d}" for n in range(1, 6)]


def test_dispute_of_a_billed_outcome_is_a_credit_note(world):
    customer(world, "r", "support-resolutions")
    outcome = {"outcome": "resolution"}
    world.at(d(10, 30))
    world.record([ev("r", d(10, 2), "outcome", outcome_id="o1", **outcome),
                  ev("r", d(10, 28), "outcome", outcome_id="o2", **outcome),
                  ev("r", d(10, 29), "outcome", outcome_id="o3", **outcome),
                  ev("r", d(10, 3), "outcome.disputed", outcome_id="o1")])  # disputed before billing
    close(world, d(11, 1))
    (october,) = docs_of(world)
    assert lines_of(october) == [("fee", "helpdesk_seat", 2900), ("usage", "resolutions", 198)]

    world.at(d(11, 3))
    world.record([ev("r", d(11, 3), "outcome.reopened", outcome_id="o2")])  # inside o2's 14 days
    result = close(world, d(11, 4))
    assert result.invoices == [] and len(result.credit_notes) == 1
    note = docs_of(world)[1]
    assert note[1] == "CN-000001" and note[2] == "credit_note" and note[3] == "finalized"
    assert note[9] == october[0]  # corrects the October invoice
    assert lines_of(note) == [("adjustment", "resolutions", -99)] and note[8] == -99
    assert docs_of(world)[0] == october  # the original never changes

    world.at(d(11, 20))
    world.record([ev("r", d(11, 20), "outcome.disputed", outcome_id="o3")])  # 22 days later: too late
    close(world, d(11, 21))
    close(world, d(12, 1))
    assert [doc[2] for doc in docs_of(world)] == ["invoice", "credit_note", "invoice"]
    assert billed(world, "r", "resolutions", d(10, 1), d(11, 1)) == 99


def test_payment_state_transitions(world):
    for cid in ("a", "b", "c"):
        customer(world, cid, "seats-requests")
    close(world, d(11, 1))
    a, b, c = (doc[0] for doc in docs_of(world))
    inv = world.invoicing
    totals = [doc[8] for doc in docs_of(world)]

    paid = inv.mark_paid(a, d(11, 2))
    assert paid.status == "paid" and paid.paid_at == d(11, 2)
    assert inv.mark_paid(a, d(11, 3)).paid_at == d(11, 2)  # idempotent
    with pytest.raises(BillingError) as err:
        inv.void(a, d(11, 3))
    assert err.value.code == ErrorCode.INVALID_TRANSITION
    assert inv.mark_payment_failed(a, d(11, 3)).status == "paid"  # paid stays paid

    failed = inv.mark_payment_failed(b, d(11, 2))
    assert failed.status == "finalized" and failed.payment_failed_at == d(11, 2)
    assert inv.mark_payment_failed(b, d(11, 9)).payment_failed_at == d(11, 2)  # the first failure counts
    assert inv.mark_paid(b, d(11, 10)).status == "paid"

    voided = inv.void(c, d(11, 2))
    assert voided.status == "void" and voided.voided_at == d(11, 2)
    assert inv.void(c, d(11, 3)).voided_at == d(11, 2)
    with pytest.raises(BillingError) as err:
        inv.mark_paid(c, d(11, 3))
    assert err.value.code == ErrorCode.INVALID_TRANSITION
    assert str(ErrorCode.INVALID_TRANSITION) == "invalid_transition"

    for call in (inv.mark_paid, inv.void, inv.mark_payment_failed):
        with pytest.raises(BillingError) as err:
            call(999, d(11, 3))
        assert err.value.code == ErrorCode.INVOICE_NOT_FOUND
    with pytest.raises(BillingError):
        inv.get(999)
    # only the payment state moved: amounts and lines are as finalized
    assert [doc[8] for doc in docs_of(world)] == totals
    assert [doc[3] for doc in docs_of(world)] == ["paid", "paid", "void"]


def test_paid_invoices_still_count_as_billed(world):
    customer(world, "a", "seats-requests")
    world.at(d(10, 20))
    world.record([ev("a", d(10, 5))])
    close(world, d(11, 1))
    world.invoicing.mark_paid(docs_of(world)[0][0], d(11, 2))
    world.at(d(11, 10))
    world.record([ev("a", d(10, 6))])
    close(world, d(12, 1))
    assert billed(world, "a", "requests", d(10, 1), d(11, 1)) == 200


def test_void_invoices_still_count_as_billed(world):
    """Voiding forgives an invoice; it does not un-bill its events: a late event for the
    voided period bills only itself (not the whole period again), and is not lost."""
    customer(world, "a", "seats-requests")
    world.at(d(10, 20))
    world.record([ev("a", d(10, 5))])
    close(world, d(11, 1))
    world.invoicing.void(docs_of(world)[0][0], d(11, 2))
    world.at(d(11, 10))
    world.record([ev("a", d(10, 6))])
    close(world, d(12, 1))
    (_, november) = docs_of(world)
    assert [line for line in lines_of(november) if line[0] == "adjustment"] == [("adjustment", "requests", 100)]


def test_invoiced_periods_cannot_be_changed_afterwards(world):
    """A finalized invoice never changes, so seats, cancellations and plan changes cannot
    reach back into an invoiced period (they would bill its events twice or not at all)."""
    customer(world, "a", "seats-requests")
    close(world, d(11, 10))
    for change in (lambda: world.accounts.change_seats("a", 3, at=d(10, 20)),
                   lambda: world.accounts.cancel("a", at=d(10, 20)),
                   lambda: world.accounts.change_plan("a", "team", at=d(10, 20))):
        with pytest.raises(BillingError) as err:
            change()
        assert err.value.code == ErrorCode.PERIOD_INVOICED
    world.accounts.change_seats("a", 3, at=d(11, 1))  # from the end of the invoiced period on: fine
    assert world.accounts.current_subscription("a", d(11, 5)).plan_id == "seats-requests"


def test_subscriptions_never_overlap(world):
    """A subscription that starts before an existing one would bill the same events twice."""
    customer(world, "a", "seats-requests", at=d(10, 10))
    for at in (d(10, 1), d(10, 15)):
        with pytest.raises(BillingError) as err:
            world.accounts.subscribe("a", "team", at=at)
        assert err.value.code == ErrorCode.SUBSCRIPTION_EXISTS
    world.accounts.cancel("a", at=d(10, 20))
    world.accounts.subscribe("a", "team", at=d(10, 20))  # after the end: fine


def test_seat_changes_mid_period_are_prorated(world):
    customer(world, "t", "team", seats=2)  # $30 a seat, in advance
    customer(world, "a", "seats-requests", seats=2)  # $10 a seat, in arrears
    world.at(d(10, 16))
    for cid in ("t", "a"):
        world.accounts.change_seats(cid, 5, at=d(10, 16))
    world.at(d(10, 20))
    for cid in ("t", "a"):
        world.accounts.change_seats(cid, 1, at=d(10, 20))
    close(world, d(11, 1))
    team, arrears = docs_of(world, "t")[0], docs_of(world, "a")[0]
    # advance: 2 seats for the month + 3 added on the 16th for 16/31 of it (30 * 48/31 = 46.45);
    # the decrease on the 20th applies from the next period
    assert lines_of(team)[:2] == [("fee", "seat", 6000), ("fee", "seat", 4645)]
    assert team[10][1][3] == "1.548387"
    # arrears: exact seat-time: 2 x 15 days + 5 x 4 days + 1 x 12 days = 62 seat-days of 31
    assert lines_of(arrears) == [("fee", "seat", 2000), ("usage", "requests", 0)]
    close(world, d(12, 1))
    assert lines_of(docs_of(world, "t")[1])[0] == ("fee", "seat", 3000)  # 1 seat from November
    assert lines_of(docs_of(world, "a")[1])[0] == ("fee", "seat", 1000)


def test_plan_change_mid_period_bills_each_part_once(world):
    customer(world, "p", "copilot-premium")
    world.at(d(10, 16))
    world.record([ev("p", d(10, 3), model="claude-opus-4-1"), ev("p", d(10, 5)), ev("p", d(10, 15, 23))])
    new = world.accounts.change_plan("p", "cursor-pro", at=d(10, 16))
    assert new.plan_id == "cursor-pro"
    world.at(d(10, 25))
    world.record([ev("p", d(10, 16)), ev("p", d(10, 20)), ev("p", d(10, 24))])
    close(world, d(10, 25))  # the old plan's part is due once it ended
    (old,) = docs_of(world, "p")
    assert old[6:8] == (d(10, 1), d(10, 16))
    assert lines_of(old) == [("fee", "subscription", 484), ("usage", "premium_requests", 0)]  # $10 x 15/31
    assert old[10][1][3] == "12"  # 10 (opus) + 1 + 1 premium requests, all before the change
    close(world, d(11, 1))
    old_again, current = docs_of(world, "p")
    assert old_again == old
    assert current[6:8] == (d(10, 16), d(11, 1))
    assert lines_of(current) == [("fee", "seat", 1032), ("usage", "fast_requests", 0)]  # $20 x 16/31
    assert current[10][1][3] == "3"  # the 3 requests from the change on
    assert current[5] != old[5]  # separate subscriptions
    close(world, d(12, 1))
    assert [doc[6] for doc in docs_of(world, "p")] == [d(10, 1), d(10, 16), d(11, 1)]


def test_cancel_bills_the_last_part_and_stops(world):
    customer(world, "p", "copilot-premium")
    world.at(d(10, 20))
    world.record([ev("p", d(10, 5))])
    world.accounts.cancel("p", at=d(10, 20))
    world.at(d(10, 25))
    world.record([ev("p", d(10, 21))])  # after the end: accepted, billed by no subscription
    close(world, d(10, 21))
    (last,) = docs_of(world, "p")
    assert last[6:8] == (d(10, 1), d(10, 20))
    assert lines_of(last) == [("fee", "subscription", 613), ("usage", "premium_requests", 0)]  # $10 x 19/31
    close(world, d(11, 1))
    close(world, d(1, 1, year=2027))
    assert docs_of(world, "p") == [last]
    with pytest.raises(BillingError) as err:
        world.accounts.cancel("p", at=d(10, 26))
    assert err.value.code == ErrorCode.SUBSCRIPTION_NOT_FOUND


def burned(world: World, grant_id: str) -> int:
    with Session(world.engine) as s:
        return int(s.exec(select(func.coalesce(func.sum(CreditBurn.amount_micro), 0))
                          .where(CreditBurn.grant_id == grant_id)).one())


def test_prepaid_credits_burn_down_across_invoices(world):
    customer(world, "p", "copilot-premium")  # 300 requests included, then $0.04
    world.accounts.grant_credits("p", Decimal("10"), at=d(10, 1), grant_id="g1")
    world.at(d(10, 30))
    world.record([ev("p", d(10, 5)) for _ in range(400)])  # $4 of overage
    close(world, d(11, 1))
    world.at(d(11, 30))
    world.record([ev("p", d(11, 5)) for _ in range(500)])  # $8: only $6 of credit left
    close(world, d(12, 1))
    world.at(d(12, 30))
    world.record([ev("p", d(12, 5)) for _ in range(350)])  # $2: no credit left
    close(world, d(1, 1, year=2027))
    oct_, nov, dec = docs_of(world, "p")
    assert lines_of(oct_)[-1] == ("credit", "g1", -400) and oct_[8] == 1000
    assert lines_of(nov)[-1] == ("credit", "g1", -600) and nov[8] == 1200
    assert "credit" not in [kind for kind, _, _ in lines_of(dec)] and dec[8] == 1200
    assert burned(world, "g1") == 10_000_000  # exactly the grant, never more


def test_credit_is_never_over_drawn_by_late_adjustments(world):
    customer(world, "p", "copilot-premium")
    world.accounts.grant_credits("p", Decimal("10"), at=d(10, 1), grant_id="g1")
    world.at(d(10, 30))
    world.record([ev("p", d(10, 5)) for _ in range(400)])  # $4, paid by credit
    close(world, d(11, 1))
    world.at(d(11, 30))
    world.record([ev("p", d(10, 6)) for _ in range(100)]  # late for October: $4 more
                 + [ev("p", d(11, 6)) for _ in range(450)])  # November: $6
    close(world, d(12, 1))  # one run bills November and October's adjustment
    assert burned(world, "g1") <= 10_000_000
    credit = -sum(amount for doc in docs_of(world, "p") for kind, key, amount in lines_of(doc) if key == "g1")
    assert credit * 10_000 == burned(world, "g1")  # credit lines and burns agree
    # every request is billed once: at $0.04, minus at most the $10 of credit
    usage = sum(amount for doc in docs_of(world, "p") for kind, key, amount in lines_of(doc)
                if key == "premium_requests")
    assert usage == (500 - 300) * 4 + (450 - 300) * 4
    assert credit == 1000


def test_expired_grant_is_not_drawn(world):
    customer(world, "p", "copilot-premium")
    world.accounts.grant_credits("p", Decimal("50"), at=d(10, 1), expires_at=d(11, 1), grant_id="old")
    world.at(d(11, 30))
    world.record([ev("p", d(11, 5)) for _ in range(400)])
    close(world, d(12, 1))
    nov = docs_of(world, "p")[-1]
    assert "credit" not in [kind for kind, _, _ in lines_of(nov)]
    assert burned(world, "old") == 0


def test_invoice_json_and_reads(world):
    from billing.invoicing.service import invoice_json

    customer(world, "a", "seats-requests")
    world.at(d(10, 20))
    world.record([ev("a", d(10, 5))])
    close(world, d(11, 1))
    (doc,) = world.invoicing.list(customer_id="a")
    inv, lines = world.invoicing.get(doc.id)
    out = invoice_json(inv, lines)
    assert out["number"] == "INV-000001" and out["status"] == "finalized" and out["total"] == "11.00"
    assert out["period"] == {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}
    assert [ln["amount"] for ln in out["lines"]] == ["10.00", "1.00"]
    assert world.invoicing.list(status="paid") == []
    with Session(world.engine) as s:
        assert s.exec(select(func.count()).select_from(Invoice)).one() == 1


def test_event_committed_after_a_higher_id_is_not_lost(world):
    """PostgreSQL assigns ids at insert, not at commit: a close must not take a watermark
    past an ingestion still in flight (it waits for it), or that event is never billed."""
    import threading

    from billing.ledger.counters import CounterPlanner, subscription_views
    from billing.store.event_store import upsert_counters
    from billing.store.repository import subscription_rows
    from billing.store.types import to_us

    if world.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serializes writers (BEGIN IMMEDIATE): no such race")
    customer(world, "a", "seats-requests")
    customer(world, "b", "seats-requests")
    world.at(d(10, 20))
    world.record([ev("a", d(10, 5))])
    world.at(d(11, 1))
    with world.engine.begin() as conn:
        ensure_range(conn, to_us(d(10, 31, 23)), to_us(d(10, 31, 23)))  # (its month's partition)
    slow = world.engine.connect()  # an ingestion transaction that has its id but has not committed
    tx = slow.begin()
    slow.exec_driver_sql("INSERT INTO usage_event (customer_id, event_id, type, ts, properties, model, cost_pico) "
                         "VALUES ('a', 'slow', 'request', %s, '{}', NULL, 0)", (to_us(d(10, 31, 23)),))
    # ... and has bumped its counters, as ingestion does in the same transaction
    views = subscription_views(subscription_rows(Session(bind=slow), {"a"}), {"a": "UTC"}, CATALOG)
    planner = CounterPlanner(views)
    planner.add("a", "request", to_us(d(10, 31, 23)), {}, 0)
    upsert_counters(slow, planner.deltas)
    # another customer's event commits first, with a higher id (the same customer's would
    # wait for the counter row the slow transaction holds)
    world.record([ev("b", d(10, 31, 23))])
    closing = threading.Thread(target=close, args=(world, d(11, 1)))
    closing.start()
    closing.join(timeout=1.0)
    assert closing.is_alive()  # the close waits for the transaction in flight
    tx.commit()
    slow.close()
    closing.join(timeout=30)
    assert not closing.is_alive()
    assert billed(world, "a", "requests", d(10, 1), d(11, 1)) == 200
    assert billed(world, "b", "requests", d(10, 1), d(11, 1)) == 100
    close(world, d(12, 1))
    assert billed(world, "a", "requests", d(10, 1), d(11, 1)) == 200


def test_rated_to_date_applies_a_mid_period_expiry_as_the_close_will(world):
    """The margin report's "rated to date" of an open period gives a grant that expired
    inside it the same rule as the close: it covers only the usage before its expiry."""
    from billing.reports.margins import margin_report

    customer(world, "p", "copilot-premium")
    world.accounts.grant_credits("p", Decimal("50"), at=d(10, 1), expires_at=d(10, 15), grant_id="short")
    world.at(d(10, 30))
    world.record([ev("p", d(10, 5)) for _ in range(350)] + [ev("p", d(10, 20)) for _ in range(500)])
    rated = {c.customer: c for c in margin_report(world.engine, CATALOG, "2026-10", as_of=d(10, 31)).customers}
    assert rated["p"].source == "rated"
    close(world, d(11, 1))
    invoiced = {c.customer: c for c in margin_report(world.engine, CATALOG, "2026-10", as_of=d(11, 2)).customers}
    assert invoiced["p"].source == "invoiced"
    assert rated["p"].revenue == invoiced["p"].revenue  # $2 of the $22 overage covered, not all of it
    (oct_,) = docs_of(world, "p")
    assert {key: amount for kind, key, amount in lines_of(oct_) if kind == "credit"} == {"short": -200}


def test_forecast_counts_a_grant_that_expired_only_against_the_usage_before_its_expiry(world):
    """Two customers alike but for a $50 grant that expired on Oct 15: the forecast takes off
    only the $2 of overage before the expiry, not $50 of the projected overage."""
    from billing.reports.forecast import forecast

    for cid in ("granted", "plain"):
        customer(world, cid, "copilot-premium", at=d(10, 1))
    world.at(d(10, 20))
    for cid in ("granted", "plain"):
        world.record([ev(cid, d(10, 5)) for _ in range(350)] + [ev(cid, d(10, 18)) for _ in range(400)])
    world.accounts.grant_credits("granted", Decimal("50"), at=d(10, 1), expires_at=d(10, 15), grant_id="short")
    rows = {r.customer: r for r in forecast(world.engine, CATALOG, d(10, 20))}
    assert rows["plain"].projected_invoice - rows["granted"].projected_invoice == Decimal("2.00")


@pytest.mark.parametrize("expires", [None, 20, 16], ids=["no-expiry", "expires-in-window-2", "at-the-change"])
def test_rated_to_date_draws_a_grant_window_after_window_like_the_close(world, expires):
    """A plan change mid-period gives two windows; one grant serves both, the second window
    getting what the first left, in the report's rated-to-date as in the close."""
    from billing.reports.margins import margin_report

    customer(world, "p", "copilot-premium")
    world.accounts.grant_credits("p", Decimal("10"), at=d(10, 1), grant_id="g",
                                 expires_at=d(10, expires) if expires else None)
    world.at(d(10, 16))
    world.record([ev("p", d(10, 5)) for _ in range(350)])  # $2 of overage on the first plan
    world.accounts.change_plan("p", "seats-requests", at=d(10, 16))
    world.at(d(10, 30))
    world.record([ev("p", d(10, 18)) for _ in range(5)] + [ev("p", d(10, 25)) for _ in range(25)])
    rated = {c.customer: c for c in margin_report(world.engine, CATALOG, "2026-10", as_of=d(10, 31)).customers}
    close(world, d(11, 1))
    invoiced = {c.customer: c for c in margin_report(world.engine, CATALOG, "2026-10", as_of=d(11, 2)).customers}
    assert (rated["p"].source, invoiced["p"].source) == ("rated", "invoiced")
    assert rated["p"].revenue == invoiced["p"].revenue


def test_grant_expiring_mid_period_covers_only_the_usage_before_its_expiry(world):
    """copilot-premium: 300 requests included, then $0.04. 350 requests before Oct 15 ($2 of
    overage), 500 after ($20): a $50 grant expiring on Oct 15 covers the $2, not $22."""
    customer(world, "p", "copilot-premium")
    world.accounts.grant_credits("p", Decimal("50"), at=d(10, 1), expires_at=d(10, 15), grant_id="short")
    world.accounts.grant_credits("p", Decimal("5"), at=d(10, 1), grant_id="long")
    world.at(d(10, 30))
    world.record([ev("p", d(10, 5)) for _ in range(350)] + [ev("p", d(10, 20)) for _ in range(500)])
    close(world, d(11, 1))
    (oct_,) = docs_of(world, "p")
    credits = {key: amount for kind, key, amount in lines_of(oct_) if kind == "credit"}
    assert credits == {"short": -200, "long": -500}  # then the later-expiring grant takes what it can
    assert burned(world, "short") == 2_000_000 and burned(world, "long") == 5_000_000
    # re-rating the period (a late event after the close) keeps the same rule
    world.at(d(11, 2))
    world.record([ev("p", d(10, 6))])  # one more request before the expiry: $0.04, still covered
    close(world, d(12, 1))
    assert burned(world, "short") == 2_040_000
