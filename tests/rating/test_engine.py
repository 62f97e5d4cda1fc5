"""The pure rating engine: exact lines and totals, order/batch/replay invariance, proration,
seats, trials, credits, spend caps, commitments, disputes and multipliers."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import parse_plan_text
from billing.events import UsageEvent
from billing.money import minor_units, round_line
from billing.rating.engine import RatingInput, rate_period
from billing.rating.meters import EventConflict, aggregate, dedupe
from billing.rating.periods import BillingCycle, calendar_month
from billing.rating.types import CreditGrant, MeterTotals

D = Decimal
NOV = calendar_month(2026, 11)  # 30 days, UTC
OCT = calendar_month(2026, 10)  # 31 days, UTC
SETTINGS = settings(max_examples=60, deadline=None)


def nov(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def plan_of(body: str, currency: str = "USD"):
    return parse_plan_text(f"plan: t\nname: T\neffective_from: 2026-01-01T00:00:00Z\ncurrency: {currency}\n" + body)


def rate(plan, usage=None, period=NOV, **kw):
    return rate_period(RatingInput(plan, "c", period, usage or {}, **kw))


def amounts(inv, kind: str | None = None) -> list[Decimal]:
    return [ln.amount for ln in inv.lines if kind is None or ln.kind == kind]


def event(i, type_="request", t=None, customer="c", **props) -> UsageEvent:
    return UsageEvent(id=f"e{i}", customer=customer, type=type_, timestamp=t or nov(2), properties=props)


# ---------------------------------------------------------------- a plan with everything

RICH = """
fees:
  - {type: flat, key: base, amount: "19.99"}
  - {type: per_seat, key: seat, unit_price: "7.77", timing: advance}
  - {type: per_seat, key: seat_arrears, unit_price: "3.33", timing: arrears}
meters:
  - {key: req, event_type: request}
  - {key: tok, event_type: llm.call, aggregation: sum, property: input_tokens}
  - {key: calls, event_type: llm.call}
charges:
  - key: req
    meter: req
    included: {per_seat: 10, pooled: 5}
    price: {model: graduated, tiers: [{up_to: 50, unit_price: "0.333"}, {unit_price: "0.127", flat_fee: "1.005"}]}
    on_exhaustion: {policy: overage, spend_cap: "25"}
  - {key: tok, meter: tok, price: {model: per_unit, unit_price: "0.0000037"}}
  - {key: calls, meter: calls, price: {model: cost_plus, markup: "0.333"}}
credits:
  - {key: monthly, amount: "2.505", per_seat: true, applies_to: [tok]}
minimum_commitment: {amount: "40.015"}
spend_cap: "60"
"""

USD_PLAN = plan_of(RICH)
JPY_PLAN = plan_of(RICH.replace('"19.99"', '"1980"').replace('"7.77"', '"777.5"'), currency="JPY")

decimals = st.decimals(min_value=0, max_value=10**7, places=3, allow_nan=False, allow_infinity=False)


@st.composite
def rich_inputs(draw):
    seat_changes = [(NOV.start, draw(st.integers(0, 5)))]
    for _ in range(draw(st.integers(0, 3))):
        seat_changes.append((NOV.start + timedelta(seconds=draw(st.integers(1, 30 * 86400 - 1))),
                             draw(st.integers(0, 8))))
    usage = {"req": MeterTotals(D(draw(st.integers(0, 400))), 1),
             "tok": MeterTotals(draw(decimals), 1),
             "calls": MeterTotals(D(draw(st.integers(0, 50))), 1,
                                  draw(st.decimals(0, 100, places=7, allow_nan=False, allow_infinity=False)))}
    grants = [CreditGrant(f"g{i}", draw(st.decimals(0, 50, places=4, allow_nan=False, allow_infinity=False)),
                          expires_at=NOV.start + timedelta(days=draw(st.integers(1, 60))))
              for i in range(draw(st.integers(0, 3)))]
    trial = draw(st.one_of(st.none(), st.integers(1, 40)))
    return dict(usage=usage, seat_changes=seat_changes, grants=grants,
                trial_end=None if trial is None else NOV.start + timedelta(days=trial))


@SETTINGS
@given(inp=rich_inputs(), plan=st.sampled_from([USD_PLAN, JPY_PLAN]))
def test_total_is_sum_of_lines_each_rounded_to_the_minor_unit(inp, plan):
    inv = rate(plan, inp["usage"], seat_changes=inp["seat_changes"], grants=inp["grants"],
               trial_end=inp["trial_end"])
    places = minor_units(plan.currency)
    assert places == (0 if plan.currency == "JPY" else 2)
    for line in inv.lines:
        assert line.amount == round_line(line.amount, plan.currency)
        assert line.amount.as_tuple().exponent == -places
    assert inv.total == sum(amounts(inv), D(0))
    assert inv.total.as_tuple().exponent == -places
    assert inv.total >= 0
    # credits: never more than a grant holds, never more than the usage they apply to
    grants = {g.id: g.amount for g in inp["grants"]}
    for gid, used in inv.credits_used.items():
        if gid in grants:
            assert 0 < used <= grants[gid]
    usage_lines = sum((ln.amount for ln in inv.lines if ln.kind in ("usage", "cap")), D(0))
    assert -sum(amounts(inv, "credit"), D(0)) <= usage_lines
    # the minimum commitment (applies to all, whole period active) is met before credits
    assert sum((ln.amount for ln in inv.lines if ln.kind != "credit"), D(0)) >= round_line(D("40.015"), plan.currency)


def test_jpy_lines_have_no_minor_unit():
    inv = rate(JPY_PLAN, {"tok": MeterTotals(D(1_000_001), 1)})
    # 1,000,001 x 0.0000037 = 3.7000037 yen -> 4
    assert [ln.amount for ln in inv.lines if ln.key == "tok"] == [D(4)]


# ------------------------------------------------------------- order, batches, replays

EVENT_PLAN = plan_of("""
meters:
  - {key: requests, event_type: request}
  - {key: weighted, event_type: request, multipliers: {property: model, values: {small: 0, big: 10}}}
  - {key: tokens, event_type: llm.call, aggregation: sum, property: input_tokens}
  - {key: peak, event_type: llm.call, aggregation: max, property: input_tokens}
  - {key: users, event_type: llm.call, aggregation: unique_count, property: user}
  - {key: pay, event_type: payment, aggregation: sum, property: amount}
  - key: wins
    event_type: outcome
    disputes: {window_days: 3}
charges:
  - {key: requests, meter: requests, included: {pooled: 20}, price: {model: volume, tiers: [{up_to: 30, unit_price: 1}, {unit_price: "0.5"}]}}
  - {key: weighted, meter: weighted, price: {model: per_unit, unit_price: "0.01"}}
  - {key: tokens, meter: tokens, price: {model: package, package_size: 1000, package_price: "0.02"}}
  - {key: peak, meter: peak, price: {model: per_unit, unit_price: "0.001"}}
  - {key: users, meter: users, price: {model: per_unit, unit_price: 2}}
  - {key: pay, meter: pay, price: {model: percentage, rate: "0.03", fixed_fee: "0.25", max_per_transaction: 1}}
  - {key: wins, meter: wins, price: {model: per_unit, unit_price: "0.99"}}
""")


@st.composite
def event_lists(draw):
    n = draw(st.integers(1, 60))
    out = []
    for i in range(n):
        t = NOV.start + timedelta(minutes=draw(st.integers(-600, 31 * 24 * 60)))  # some outside the period
        kind = draw(st.sampled_from(["request", "llm.call", "payment", "outcome", "outcome.disputed"]))
        if kind == "request":
            props = {"model": draw(st.sampled_from(["small", "big", "other"]))}
        elif kind == "llm.call":
            props = {"input_tokens": draw(st.integers(0, 5000)), "user": draw(st.sampled_from("abc"))}
        elif kind == "payment":
            props = {"amount": str(draw(st.decimals(0, 100, places=2, allow_nan=False, allow_infinity=False)))}
        else:
            props = {"outcome_id": draw(st.sampled_from(["o1", "o2", "o3", "o4"]))}
        out.append(UsageEvent(id=f"e{i}", customer="c", type=kind, timestamp=t, properties=props))
    return out


def invoice_of(events):
    usage = aggregate(EVENT_PLAN, events, NOV.start, NOV.end)
    return usage, rate(EVENT_PLAN, usage)


@SETTINGS
@given(events=event_lists(), seed=st.randoms(use_true_random=False), cuts=st.lists(st.integers(0, 60), max_size=4))
def test_rating_is_invariant_to_order_batches_and_replays(events, seed, cuts):
    usage, invoice = invoice_of(events)
    shuffled = list(events)
    seed.shuffle(shuffled)
    assert invoice_of(shuffled) == (usage, invoice)

    # the same events arriving in batches, batches in any order, some batches replayed
    bounds = sorted({0, len(shuffled), *(min(c, len(shuffled)) for c in cuts)})
    batches = [shuffled[a:b] for a, b in zip(bounds, bounds[1:])]
    seed.shuffle(batches)
    replayed = [e for batch in batches for e in batch] + [e for batch in batches[:1] for e in batch]
    assert invoice_of(replayed) == (usage, invoice)

    # count/sum meters without disputes add up across disjoint batches
    for key in ("requests", "weighted", "tokens", "pay"):
        parts = [aggregate(EVENT_PLAN, batch, NOV.start, NOV.end)[key] for batch in batches]
        added = sum(parts, MeterTotals())
        assert (added.units, added.events, added.cost) == (usage[key].units, usage[key].events, usage[key].cost)


@SETTINGS
@given(events=event_lists(), data=st.data())
def test_replaying_any_subset_changes_nothing(events, data):
    replay = data.draw(st.lists(st.sampled_from(events), max_size=len(events)))
    assert invoice_of(events + replay) == invoice_of(events)
    assert len(dedupe(events + replay)) == len(events)


def test_same_id_with_other_content_is_a_conflict():
    original = event(1, model="small")
    conflicting = event(1, model="big")
    with pytest.raises(EventConflict) as info:
        aggregate(EVENT_PLAN, [original, conflicting], NOV.start, NOV.end)
    assert info.value.code == "event_conflict"
    with pytest.raises(EventConflict):
        dedupe([original, event(1, t=nov(3), model="small")])  # other timestamp
    # the same id for another customer is another event
    assert len(dedupe([original, event(1, customer="d", model="big")])) == 2


def test_an_unreadable_measured_value_is_an_event_error_not_a_crash():
    from billing.events import EventError

    for value, code in (("lots", "non_numeric_quantity"), (-3, "negative_quantity"), (True, "non_numeric_quantity")):
        bad = event(1, "llm.call", input_tokens=5, user="u")
        bad = bad.model_copy(update={"properties": {"input_tokens": value, "user": "u"}})
        with pytest.raises(EventError) as info:
            aggregate(EVENT_PLAN, [bad], NOV.start, NOV.end)
        assert info.value.code == code and "'e1'" in info.value.message


def test_duplicates_count_once_hand_checked():
    events = [event(i, model="big") for i in range(3)]
    usage = aggregate(EVENT_PLAN, events + events[:2], NOV.start, NOV.end)
    assert usage["requests"].units == 3 and usage["weighted"].units == 30


# ------------------------------------------------------------------------------- seats

TIMEZONES = ["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu",
             "Pacific/Chatham", "America/St_Johns", "Asia/Tokyo", "Europe/Dublin", "Pacific/Apia"]


@SETTINGS
@given(price=st.decimals(min_value=0, max_value=10_000, places=6, allow_nan=False, allow_infinity=False),
       seats=st.integers(0, 50), tz=st.sampled_from(TIMEZONES), year=st.integers(2000, 2040),
       month=st.integers(1, 12), day=st.integers(1, 31), anchor=st.sampled_from(["calendar", "anniversary"]),
       interval=st.sampled_from(["month", "year"]), early=st.integers(0, 10**7))
def test_a_seat_held_for_the_whole_period_costs_exactly_the_full_price(
        price, seats, tz, year, month, day, anchor, interval, early):
    anchor_at = datetime(year, month, min(day, 28), 9, 30, tzinfo=UTC)
    cycle = BillingCycle(interval, anchor, tz, anchor_at if anchor == "anniversary" else None)
    period = cycle.period_containing(datetime(year, month, min(day, 28), tzinfo=UTC) + timedelta(days=40))
    plan = plan_of(f"""
fees:
  - {{type: per_seat, key: adv, unit_price: "{price}", timing: advance}}
  - {{type: per_seat, key: arr, unit_price: "{price}", timing: arrears}}
  - {{type: flat, key: flat, amount: "{price}"}}
""")
    # the seat count was set some time before the period (or exactly at its start)
    inv = rate(plan, period=period, seat_changes=[(period.start - timedelta(seconds=early), seats)])
    full = round_line(price * seats, "USD")
    assert amounts(inv) == [full, full, round_line(price, "USD")]
    assert inv.lines[0].quantity == seats


SEATS = plan_of("""
fees:
  - {type: per_seat, key: adv, unit_price: "30", timing: advance}
""")
SEATS_ARREARS = plan_of("""
fees:
  - {type: per_seat, key: arr, unit_price: "30", timing: arrears}
""")


def test_advance_seat_increase_prorated_decrease_not_refunded():
    # November: 30 days. 2 seats, +1 on Nov 11 (20 of 30 days left), back to 1 on Nov 21
    changes = [(NOV.start, 2), (nov(11), 3), (nov(21), 1)]
    inv = rate(SEATS, seat_changes=changes)
    # 2 x 30 = 60.00; 1 x 30 x 20/30 = 20.00; the decrease is not refunded
    assert amounts(inv) == [D("60.00"), D("20.00")]
    assert inv.total == D("80.00")


def test_advance_seat_back_up_to_the_paid_count_costs_nothing_more():
    # 3 seats, down to 1 on Nov 11, up to 4 on Nov 21 (10 days left): only the 4th seat is new
    inv = rate(SEATS, seat_changes=[(NOV.start, 3), (nov(11), 1), (nov(21), 4)])
    assert amounts(inv) == [D("90.00"), D("10.00")]  # 3 x 30; 1 x 30 x 10/30


def test_advance_increase_in_a_31_day_month():
    # October: 31 days; 1 seat + 1 added Oct 17 00:00 (15 days left): 30 x 15/31 = 14.516.. -> 14.52
    inv = rate(SEATS, period=OCT, seat_changes=[(OCT.start, 1), (datetime(2026, 10, 17, tzinfo=UTC), 2)])
    assert amounts(inv) == [D("30.00"), D("14.52")]


def test_arrears_seats_are_time_weighted():
    # 2 seats x 10 days + 3 x 10 days + 1 x 10 days = 60 seat-days / 30 = 2 seats -> 60.00
    inv = rate(SEATS_ARREARS, seat_changes=[(NOV.start, 2), (nov(11), 3), (nov(21), 1)])
    assert amounts(inv) == [D("60.00")]
    # 1 seat for 12 hours only: 30 x 0.5/30 = 0.50
    inv = rate(SEATS_ARREARS, seat_changes=[(NOV.start, 0), (nov(5), 1), (nov(5, 12), 0)])
    assert amounts(inv) == [D("0.50")]


def test_min_seats():
    plan = plan_of('fees:\n  - {type: per_seat, key: s, unit_price: "10", min_seats: 3}\n')
    assert rate(plan, seat_changes=[(NOV.start, 1)]).total == D("30.00")
    assert rate(plan, seat_changes=[(NOV.start, 5)]).total == D("50.00")


# --------------------------------------------------------------- trials and proration

FEES = plan_of("""
fees:
  - {type: flat, key: base, amount: "30"}
  - {type: per_seat, key: seat, unit_price: "30"}
""")


def test_trial_waives_fees_for_its_part():
    # trial until Nov 11: 20 of 30 days paid -> 20.00 flat, 2 seats x 20.00
    inv = rate(FEES, seat_changes=[(NOV.start, 2)], trial_end=nov(11))
    assert amounts(inv) == [D("20.00"), D("40.00")]
    assert rate(FEES, trial_end=nov(1)).total == D("60.00")  # trial ended at the start
    assert rate(FEES, trial_end=datetime(2026, 12, 15, tzinfo=UTC)).lines == ()  # whole period in trial


def test_trial_does_not_waive_usage():
    plan = plan_of("""
fees: [{type: flat, key: base, amount: "30"}]
meters: [{key: m, event_type: request}]
charges: [{key: m, meter: m, price: {model: per_unit, unit_price: "0.10"}}]
""")
    inv = rate(plan, {"m": MeterTotals(D(7), 7)}, trial_end=datetime(2026, 12, 15, tzinfo=UTC))
    assert amounts(inv) == [D("0.70")]


@pytest.mark.parametrize("active_from, active_until, expected", [
    (nov(21), None, "10.00"),       # started with 10 days left
    (None, nov(11), "10.00"),       # cancelled after 10 days
    (nov(6), nov(26), "20.00"),     # 20 days
    (nov(6, 12), nov(6, 18), "0.25"),  # 6 hours: 30 x 0.25/30
])
def test_active_window_prorates_fees(active_from, active_until, expected):
    inv = rate(FEES, seat_changes=[(NOV.start, 1)], active_from=active_from, active_until=active_until)
    assert amounts(inv) == [D(expected), D(expected)]


def test_minimum_commitment_prorated_to_the_active_window():
    plan = plan_of("""
meters: [{key: m, event_type: request}]
charges: [{key: m, meter: m, price: {model: per_unit, unit_price: "1"}}]
minimum_commitment: {amount: "90", applies_to: usage}
""")
    inv = rate(plan, {"m": MeterTotals(D(5), 5)}, active_from=nov(21))
    assert amounts(inv) == [D("5.00"), D("25.00")]  # 90 x 10/30 = 30 minimum; 30 - 5
    assert inv.total == D("30.00")


# ------------------------------------------------------------------------------ credits

CREDIT_PLAN = plan_of("""
fees: [{type: flat, key: base, amount: "10"}]
meters:
  - {key: a, event_type: a}
  - {key: b, event_type: b}
charges:
  - {key: a, meter: a, included: {pooled: 100}, price: {model: per_unit, unit_price: "1"}}
  - {key: b, meter: b, price: {model: per_unit, unit_price: "2"}}
""")


def usage_ab(a: int, b: int) -> dict:
    return {"a": MeterTotals(D(a), a), "b": MeterTotals(D(b), b)}


def test_credits_are_drawn_before_overage_and_never_exceed_the_grant():
    # 150 units of a: 100 included, 50 x 1 = 50.00 overage; a 20.00 grant pays part of it
    inv = rate(CREDIT_PLAN, usage_ab(150, 0), grants=[CreditGrant("g", D(20))])
    # fee, a: included, a: overage, b: nothing used, credit
    assert amounts(inv) == [D("10.00"), D("0.00"), D("50.00"), D("0.00"), D("-20.00")]
    assert inv.credits_used == {"g": D("20.00")} and inv.total == D("40.00")


def test_credits_never_exceed_the_eligible_usage_nor_touch_fees():
    inv = rate(CREDIT_PLAN, usage_ab(130, 0), grants=[CreditGrant("g", D(500))])
    assert inv.credits_used == {"g": D("30.00")}
    assert inv.total == D("10.00")  # the fee stays
    assert rate(CREDIT_PLAN, usage_ab(50, 0), grants=[CreditGrant("g", D(500))]).credits_used == {}


def test_a_grant_with_a_fraction_of_a_cent_never_overdraws():
    inv = rate(CREDIT_PLAN, usage_ab(200, 0), grants=[CreditGrant("g", D("12.349"))])
    assert inv.credits_used == {"g": D("12.34")}


def test_soonest_expiry_first():
    late = CreditGrant("late", D(20), expires_at=datetime(2027, 6, 1, tzinfo=UTC))
    never = CreditGrant("never", D(20))
    soon = CreditGrant("soon", D(20), expires_at=nov(25))
    # 45.00 of usage: soon 20, late 20, never 5 -- whatever order the grants come in
    for grants in ([late, never, soon], [never, soon, late], [soon, late, never]):
        inv = rate(CREDIT_PLAN, usage_ab(145, 0), grants=grants)
        assert inv.credits_used == {"soon": D(20), "late": D(20), "never": D(5)}
        assert [ln.key for ln in inv.lines if ln.kind == "credit"] == ["soon", "late", "never"]


def test_expired_or_future_grants_are_not_used():
    expired = CreditGrant("old", D(20), expires_at=NOV.start)
    future = CreditGrant("next", D(20), effective_at=NOV.end)
    assert rate(CREDIT_PLAN, usage_ab(145, 0), grants=[expired, future]).credits_used == {}


def test_credits_respect_applies_to():
    # a: 30.00 overage; b: 5 x 2 = 10.00; a grant for b only covers the 10.00
    inv = rate(CREDIT_PLAN, usage_ab(130, 5), grants=[CreditGrant("g", D(100), applies_to=("b",))])
    assert inv.credits_used == {"g": D("10.00")}
    assert inv.total == D("40.00")  # 10 + 30 + 10 - 10


def test_plan_credits_per_seat_with_applies_to():
    plan = plan_of("""
fees: [{type: per_seat, key: seat, unit_price: "10"}]
meters:
  - {key: a, event_type: a}
  - {key: b, event_type: b}
charges:
  - {key: a, meter: a, price: {model: per_unit, unit_price: "1"}}
  - {key: b, meter: b, price: {model: per_unit, unit_price: "1"}}
credits:
  - {key: seat_credit, amount: "5", per_seat: true, applies_to: [a]}
""")
    # 3 seats: 30.00 fees; a 40.00, b 8.00; credit 3 x 5 = 15.00 on a only
    inv = rate(plan, usage_ab(40, 8), seat_changes=[(NOV.start, 3)])
    assert inv.credits_used == {"plan:seat_credit": D("15.00")}
    assert inv.total == D("63.00")


def test_a_grant_expiring_mid_period_covers_only_the_usage_before_its_expiry():
    # 40.00 of a overage in the month, of which 10.00 (110 units: 100 included) before Nov 11
    soon = CreditGrant("soon", D(25), expires_at=nov(11))
    before = {nov(11): usage_ab(110, 0)}
    inv = rate(CREDIT_PLAN, usage_ab(140, 0), grants=[soon], usage_before=before)
    assert inv.credits_used == {"soon": D("10.00")} and inv.total == D("40.00")  # 10 + 40 - 10
    # without the usage up to its expiry, a grant in force during the period covers all of it
    assert rate(CREDIT_PLAN, usage_ab(140, 0), grants=[soon]).credits_used == {"soon": D("25.00")}
    # nothing charged before the expiry (the included units were not used up): nothing drawn
    assert rate(CREDIT_PLAN, usage_ab(140, 0), grants=[soon],
                usage_before={nov(11): usage_ab(90, 0)}).credits_used == {}


def test_later_grants_pick_up_what_an_earlier_expiring_grant_could_not_cover():
    # b: 2.00 a unit; 3 units before Nov 6 (6.00), 8 before Nov 16 (16.00), 12 in all (24.00)
    first = CreditGrant("first", D(10), expires_at=nov(6))
    second = CreditGrant("second", D(8), expires_at=nov(16))
    third = CreditGrant("third", D(100))
    before = {nov(6): usage_ab(0, 3), nov(16): usage_ab(0, 8)}
    for grants in ([third, second, first], [first, second, third]):
        inv = rate(CREDIT_PLAN, usage_ab(0, 12), grants=grants, usage_before=before)
        # first: 6.00 (all it could reach); second: 16.00 - 6.00 = 10.00 reachable, holds 8.00;
        # third: the remaining 24.00 - 14.00
        assert inv.credits_used == {"first": D("6.00"), "second": D("8.00"), "third": D("10.00")}
        assert inv.total == D("10.00")


@SETTINGS
@given(a=st.integers(0, 500), b=st.integers(0, 100),
       grants=st.lists(st.decimals(0, 200, places=3, allow_nan=False, allow_infinity=False), max_size=4))
def test_credits_never_make_anything_negative(a, b, grants):
    inv = rate(CREDIT_PLAN, usage_ab(a, b), grants=[CreditGrant(f"g{i}", g) for i, g in enumerate(grants)])
    usage = max(0, a - 100) + 2 * b
    drawn = sum(inv.credits_used.values(), D(0))
    # each grant can give at most its whole cents; together never more than the usage
    assert drawn == min(usage, sum((g.quantize(D("0.01"), rounding=ROUND_FLOOR) for g in grants), D(0)))
    assert inv.total == D(10) + usage - drawn >= D(10)


# --------------------------------------------------------------------------- spend caps

def test_charge_spend_cap():
    plan = plan_of("""
meters: [{key: m, event_type: request}]
charges:
  - {key: m, meter: m, included: {pooled: 100}, price: {model: per_unit, unit_price: "0.05"},
     on_exhaustion: {policy: overage, spend_cap: "50"}}
""")
    # 2,100 used: 2,000 x 0.05 = 100.00, capped at 50.00
    inv = rate(plan, {"m": MeterTotals(D(2100), 2100)})
    assert amounts(inv) == [D("0.00"), D("100.00"), D("-50.00")] and inv.total == D("50.00")
    # under the cap: no cap line
    assert amounts(rate(plan, {"m": MeterTotals(D(1100), 1100)})) == [D("0.00"), D("50.00")]


# ------------------------------------------------- a charge is rounded once, not part by part

@pytest.mark.parametrize("price, usage, lines, total", [
    # graduated: 0.004 + 0.004 = 0.008 -> 0.01 (tier by tier: 0.00 + 0.00); the tier lines show
    # round(running sum) - round(previous): 0.00, then 0.01
    ('{model: graduated, tiers: [{up_to: 1, unit_price: "0.004"}, {unit_price: "0.004"}]}',
     MeterTotals(D(2), 2), ["0.00", "0.01"], "0.01"),
    # percentage from aggregates: 0.1 x 5% + one 0.105 fee = 0.11 (part by part: 0.01 + 0.11)
    ('{model: percentage, rate: "0.05", fixed_fee: "0.105"}', MeterTotals(D("0.1"), 1), ["0.01", "0.10"], "0.11"),
    # per transaction: the fee 0.005 + 0.105 = 0.11 is raised to the 0.20 minimum: the charge is
    # that fee, 0.20 (three parts rounded apart: 0.01 + 0.11 + 0.09 = 0.21)
    ('{model: percentage, rate: "0.05", fixed_fee: "0.105", min_per_transaction: "0.2"}',
     MeterTotals(D("0.1"), 1, transactions=(D("0.1"),)), ["0.01", "0.10", "0.09"], "0.20"),
])
def test_a_charge_is_rounded_once_and_its_parts_add_up_to_it(price, usage, lines, total):
    plan = plan_of(f"""
meters: [{{key: m, event_type: sale, aggregation: sum, property: amount}}]
charges:
  - {{key: m, meter: m, price: {price}}}
""")
    inv = rate(plan, {"m": usage})
    assert [str(a) for a in amounts(inv, "usage")] == lines
    assert inv.total == D(total) and inv.usage[0].amount == D(total)


def test_plan_spend_cap_limits_usage_and_what_credits_can_cover():
    plan = plan_of("""
fees: [{type: flat, key: base, amount: "5"}]
meters: [{key: a, event_type: a}, {key: b, event_type: b}]
charges:
  - {key: a, meter: a, price: {model: per_unit, unit_price: "1"}}
  - {key: b, meter: b, price: {model: per_unit, unit_price: "1"}}
spend_cap: "100"
""")
    inv = rate(plan, usage_ab(90, 60))  # 150.00 of usage capped at 100.00
    assert amounts(inv) == [D("5.00"), D("90.00"), D("60.00"), D("-50.00")] and inv.total == D("105.00")
    inv = rate(plan, usage_ab(90, 60), grants=[CreditGrant("g", D(500))])
    assert inv.credits_used == {"g": D("100.00")} and inv.total == D("5.00")


# ------------------------------------------------------------------ minimum commitment

@pytest.mark.parametrize("applies_to, units, lines", [
    ("usage", 12, ["20.00", "12.00", "38.00"]),  # usage 12 -> true-up to 50
    ("usage", 60, ["20.00", "60.00"]),           # above the minimum
    ("all", 12, ["20.00", "12.00", "18.00"]),    # 20 + 12 = 32 -> true-up 18
    ("all", 30, ["20.00", "30.00"]),             # exactly 50
])
def test_minimum_commitment_true_up(applies_to, units, lines):
    plan = plan_of(f"""
fees: [{{type: flat, key: base, amount: "20"}}]
meters: [{{key: m, event_type: request}}]
charges: [{{key: m, meter: m, price: {{model: per_unit, unit_price: "1"}}}}]
minimum_commitment: {{amount: "50", applies_to: {applies_to}}}
""")
    inv = rate(plan, {"m": MeterTotals(D(units), units)})
    assert amounts(inv) == [D(x) for x in lines]
    assert inv.total == sum((D(x) for x in lines), D(0))


# ------------------------------------------------------------------------------ disputes

DISPUTE_PLAN = plan_of("""
meters:
  - key: resolutions
    event_type: outcome
    filter: {outcome: resolution}
    disputes: {window_days: 14}
charges: [{key: resolutions, meter: resolutions, price: {model: per_unit, unit_price: "0.99"}}]
""")


def outcome(i, t, oid=None, kind="resolution"):
    return UsageEvent(id=f"o{i}", customer="c", type="outcome", timestamp=t,
                      properties={"outcome": kind, "outcome_id": oid or f"conv{i}"})


def dispute(i, t, oid, type_="outcome.disputed"):
    return UsageEvent(id=f"d{i}", customer="c", type=type_, timestamp=t, properties={"outcome_id": oid})


def resolutions(events, as_of=None):
    usage = aggregate(DISPUTE_PLAN, events, NOV.start, NOV.end, as_of=as_of)
    return usage["resolutions"].units, rate(DISPUTE_PLAN, usage).total


def test_dispute_inside_the_window_is_not_billed():
    events = [outcome(1, nov(2)), outcome(2, nov(3)), outcome(3, nov(4)),
              dispute(1, nov(10), "conv1"),                           # 8 days later: inside
              dispute(2, nov(17), "conv2", "outcome.reopened"),       # exactly 14 days: inside
              dispute(3, nov(18, 1), "conv3")]                        # 14 days 1 hour: too late
    assert resolutions(events) == (D(1), D("0.99"))


def test_dispute_after_the_window_is_billed():
    events = [outcome(1, nov(1)), dispute(1, nov(20), "conv1")]
    assert resolutions(events) == (D(1), D("0.99"))


def test_dispute_after_the_period_but_inside_the_window():
    events = [outcome(1, nov(28)), dispute(1, datetime(2026, 12, 3, tzinfo=UTC), "conv1")]
    assert resolutions(events) == (D(0), D("0.00"))
    # closing on Dec 1, the dispute was not known yet: billed
    assert resolutions(events, as_of=NOV.end) == (D(1), D("0.99"))


def test_dispute_before_the_outcome_and_other_outcomes_do_not_count():
    events = [outcome(1, nov(5)), dispute(1, nov(4), "conv1"), outcome(2, nov(5), kind="escalation")]
    assert resolutions(events) == (D(1), D("0.99"))


# --------------------------------------------------------------------------- multipliers

def test_multipliers_zero_and_ten_times():
    plan = plan_of("""
meters:
  - key: premium
    event_type: request
    multipliers: {property: model, default: 1, values: {base: 0, opus: 10, sonnet: 1}}
charges:
  - {key: premium, meter: premium, included: {pooled: 10}, price: {model: per_unit, unit_price: "0.04"}}
""")
    events = ([event(i, model="base") for i in range(5)] + [event(10 + i, model="opus") for i in range(3)]
              + [event(20, model="sonnet"), event(21, model="unlisted"), event(22)])
    usage = aggregate(plan, events, NOV.start, NOV.end)
    # 5 x 0 + 3 x 10 + 1 + 1 (default) + 1 (no model: default) = 33; 33 - 10 included = 23 x 0.04
    assert usage["premium"].units == D(33) and usage["premium"].events == 11
    assert rate(plan, usage).total == D("0.92")
    random.Random(7).shuffle(events)
    assert aggregate(plan, events, NOV.start, NOV.end) == usage


def test_unique_count_of_text_ids_and_max():
    events = [event(1, "llm.call", user="u_42", input_tokens=900), event(2, "llm.call", user="u_7", input_tokens=4000),
              event(3, "llm.call", user="u_42", input_tokens=100), event(4, "llm.call", input_tokens=50)]
    usage = aggregate(EVENT_PLAN, events, NOV.start, NOV.end)
    assert usage["users"].units == D(2)  # u_42, u_7 (the event without a user adds none)
    assert usage["peak"].units == D(4000)
    assert usage["tokens"].units == D(5050)
    inv = rate(EVENT_PLAN, usage)
    # users 2 x 2 = 4.00; peak 4000 x 0.001 = 4.00; tokens ceil(5050/1000) = 6 x 0.02 = 0.12
    assert {ln.key: ln.amount for ln in inv.lines if ln.amount} == {
        "users": D("4.00"), "peak": D("4.00"), "tokens": D("0.12")}


def test_provider_cost_counts_each_event_once_across_meters():
    plan = plan_of("""
meters:
  - {key: calls, event_type: llm.call}
  - {key: chat_calls, event_type: llm.call, filter: {feature: chat}}
  - {key: input, event_type: llm.call, aggregation: sum, property: input_tokens}
  - {key: wins, event_type: outcome, filter: {outcome: win}}
  - {key: win_value, event_type: outcome, aggregation: sum, property: amount, filter: {outcome: win}}
  - {key: losses, event_type: outcome, filter: {outcome: loss}}
""")
    events = [event(1, "llm.call", feature="chat", input_tokens=10, cost="4"),
              event(2, "llm.call", feature="code", input_tokens=10, cost="6"),
              event(3, "outcome", outcome="win", amount=5, cost="1"),
              event(4, "outcome", outcome="loss", cost="2"),
              event(5, "outcome", outcome="draw", cost="100"),   # no meter sees it
              event(6, "request", cost="1000")]                    # no meter sees it
    usage = aggregate(plan, events, NOV.start, NOV.end, lambda e: e.number("cost"))
    # llm.call: 4 + 6 (not again for chat_calls / input); outcome: win 1 (once) + loss 2
    assert rate(plan, usage).provider_cost == D(13)
    assert rate(plan, usage, provider_cost=D("99.5")).provider_cost == D("99.5")
