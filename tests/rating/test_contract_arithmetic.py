"""Coupons, term commitments and add-on fees through the real engine (``rate_period``) against a plain
reference computed here: discounts in redemption order, each on what its scope still
bills; credits after them and never below zero; commitment true-ups on the charges
before discounts and credits; a term's minimums adding up to its amount exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import parse_plan_text
from billing.rating import arithmetic
from billing.rating.engine import RatingInput, rate_period
from billing.rating.periods import BillingCycle, calendar_month
from billing.rating.types import AddOn, CreditGrant, Discount, LineKind, MeterTotals, TermCommitment

D = Decimal
NOV = calendar_month(2026, 11)
CENT = D("0.01")


def plan(fee: str, price: str, minimum: str | None, scope: str):
    commitment = f"minimum_commitment: {{amount: \"{minimum}\", applies_to: {scope}}}\n" if minimum else ""
    return parse_plan_text(f"""plan: p
name: P
effective_from: 2026-01-01T00:00:00Z
fees:
  - {{type: flat, key: base, amount: "{fee}"}}
meters:
  - {{key: calls, event_type: llm.call}}
charges:
  - {{key: calls, meter: calls, price: {{model: per_unit, unit_price: "{price}"}}}}
{commitment}""")


def r(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


money = st.decimals(min_value=0, max_value=300, places=2)
discount = st.tuples(st.sampled_from(["usage", "all"]), st.booleans(),
                     st.decimals(min_value=D("0.01"), max_value=100, places=2),
                     st.decimals(min_value=D("0.01"), max_value=500, places=2))


@settings(max_examples=150, deadline=None)
@given(fee=money, price=st.sampled_from(["0.001", "0.013", "0.5", "2"]), units=st.integers(0, 50_000),
       coupons=st.lists(discount, max_size=3), credit=st.none() | money,
       minimum=st.none() | money.map(str), scope=st.sampled_from(["usage", "all"]))
def test_coupons_credits_and_minimum_match_the_reference(fee, price, units, coupons, credit, minimum, scope):
    p = plan(str(fee), price, minimum, scope)
    discounts = [Discount(f"coupon:{i}", f"C{i}", s, pct if is_pct else None, None if is_pct else amt)
                 for i, (s, is_pct, pct, amt) in enumerate(coupons)]
    grants = [CreditGrant("g", credit)] if credit else []
    inv = rate_period(RatingInput(p, "c", NOV, {"calls": MeterTotals(D(units), units)}, grants=grants,
                                  discounts=discounts))

    # the reference, written out: fees + usage, then each coupon on what its scope still bills
    usage = r(units * D(price))
    total = fee + usage
    given_off = D(0)
    offs = []
    for d in discounts:
        base = (fee + usage if d.applies_to == "all" else usage) - given_off
        off = D(0) if base <= 0 else min(r(base * d.percent / 100) if d.percent is not None else d.amount, base)
        given_off += off
        offs.append(off)
    after = total - given_off
    drawn = min(credit or D(0), usage, after)  # credits on usage, never below zero
    true_up = D(0)
    if minimum:
        base = fee + usage if scope == "all" else usage  # before discounts and credits
        true_up = max(D(0), D(minimum) - base)
    assert [-ln.amount for ln in inv.lines if ln.kind == LineKind.DISCOUNT] == [o for o in offs if o]
    assert inv.credits_used.get("g", D(0)) == drawn
    assert sum((ln.amount for ln in inv.lines if ln.kind == LineKind.COMMITMENT), D(0)) == true_up
    assert inv.total == after - drawn + true_up
    assert inv.total >= 0


def test_a_coupon_worth_more_than_the_invoice_stops_it_at_zero():
    p = plan("10.00", "0.5", None, "all")
    inv = rate_period(RatingInput(p, "c", NOV, {"calls": MeterTotals(D(10), 10)},
                                  discounts=[Discount("coupon:X", "X", "all", amount=D("1000"))],
                                  grants=[CreditGrant("g", D(50))]))
    assert [(ln.kind, ln.amount) for ln in inv.lines if ln.kind in (LineKind.DISCOUNT, LineKind.CREDIT)] == [
        (LineKind.DISCOUNT, D("-15.00"))]
    assert inv.total == 0 and inv.credits_used == {}


@settings(max_examples=100, deadline=None)
@given(amount=st.decimals(min_value=D("0.01"), max_value=100_000, places=2), start_day=st.integers(0, 60),
       length_days=st.integers(1, 800), extra_seconds=st.integers(0, 86_399))
def test_term_minimums_over_the_term_add_up_to_its_amount(amount, start_day, length_days, extra_seconds):
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=start_day, seconds=extra_seconds)
    end = start + timedelta(days=length_days)
    term = TermCommitment("commitment:1", "Term", amount, start, end)
    cycle = BillingCycle("month", "calendar", "UTC")
    periods = cycle.periods_between(start, end)
    shares = [arithmetic.term_minimum(term, max(p.start, start), min(p.end, end), "USD") for p in periods]
    assert sum(shares) == amount
    total = (end - start).total_seconds()
    for p, share in zip(periods, shares):  # the reference: rounded cumulative share at each end
        def reached(t):
            return r(amount * D(min(max((t - start).total_seconds(), 0), total)) / D(total))
        assert share == reached(min(p.end, end)) - reached(max(p.start, start))


def test_term_commitment_tops_up_each_window_to_its_share():
    p = plan("10.00", "0.5", None, "all")
    term = TermCommitment("commitment:7", "Annual commitment", D("300.00"), datetime(2026, 11, 1, tzinfo=UTC),
                          datetime(2027, 2, 1, tzinfo=UTC))  # 92 days
    inv = rate_period(RatingInput(p, "c", NOV, {"calls": MeterTotals(D(20), 20)}, commitments=[term]))
    # November's share: 300 x 30/92 = 97.83; billed 10 + 10 = 20: a 77.83 true-up
    assert [(ln.kind, ln.key, ln.description, ln.amount) for ln in inv.lines][-1] == (
        LineKind.COMMITMENT, "commitment:7", "Annual commitment true-up", D("77.83"))
    assert inv.total == D("97.83")


ADDON = parse_plan_text("""plan: sso
name: SSO add-on
effective_from: 2026-01-01T00:00:00Z
fees:
  - {type: flat, key: sso, amount: "50.00"}
  - {type: per_seat, key: seats, unit_price: "2.00", timing: arrears}
""")


@settings(max_examples=100, deadline=None)
@given(start_h=st.integers(0, 30 * 24 - 1), length_h=st.none() | st.integers(1, 30 * 24), seats=st.integers(0, 9),
       percent=st.none() | st.decimals(min_value=1, max_value=100, places=0))
def test_addon_fees_are_prorated_into_the_base_invoice(start_h, length_h, seats, percent):
    base = plan("10.00", "0.5", None, "all")
    start = NOV.start + timedelta(hours=start_h)
    end = None if length_h is None else start + timedelta(hours=length_h)
    addon = AddOn("addon:1", ADDON.name, ADDON.fees, start, end)
    discounts = [Discount("coupon:A", "A", "all", percent=percent)] if percent else []
    inv = rate_period(RatingInput(base, "c", NOV, {}, seat_changes=[(NOV.start, seats)], addons=[addon],
                                  discounts=discounts))
    # the reference: each add-on fee x the hours it is active of the period's 720
    seconds = D(int((min(end or NOV.end, NOV.end) - start).total_seconds()))
    sso, per_seat = r(D(50) * seconds / D(30 * 86_400)), r(D(2) * seats * seconds / D(30 * 86_400))
    assert [(ln.key, ln.amount) for ln in inv.lines if ln.key.startswith("addon:")] == [
        ("addon:1:sso", sso), ("addon:1:seats", per_seat)]
    assert all(ln.description.startswith("SSO add-on: ") for ln in inv.lines if ln.key.startswith("addon:"))
    charged = D(10) + sso + per_seat
    off = r(charged * percent / 100) if percent else D(0)
    assert inv.total == charged - off
