"""Threshold invoicing's arithmetic (``rating.thresholds``), through the invoices
``invoice preview`` schedules for a period (``billing.preview_schedule``): whatever the
events, threshold and check cadence, each threshold invoice bills at least the threshold,
and the period's invoices add up to its one invoice, to the cent (plan credits, a volume
tier that makes usage cheaper after a cut, a minimum commitment and advance fees included)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.catalog import parse_plan_text
from billing.events import UsageEvent
from billing.preview_schedule import schedule
from billing.rating.engine import RatingInput, rate_period
from billing.rating.meters import aggregate
from billing.rating.periods import calendar_month
from billing.rating.thresholds import Billed, accrued, reaches, taken_back

D = Decimal
OCT = calendar_month(2026, 10)

PLAN = """
plan: t
name: T
effective_from: 2026-01-01T00:00:00Z
currency: {currency}
billing: {{advance_fees: {advance}}}
{threshold}
fees: [{{type: per_seat, key: seat, unit_price: "30"}}]
meters: [{{key: req, event_type: request}}, {{key: tok, event_type: llm.call, aggregation: sum, property: units}}]
charges:
  - key: req
    meter: req
    included: {{pooled: 5}}
    price: {{model: volume, tiers: [{{up_to: 40, unit_price: "0.70"}}, {{unit_price: "0.45"}}]}}
  - {{key: tok, meter: tok, price: {{model: per_unit, unit_price: "0.0133"}}}}
credits: [{{key: monthly, amount: "{credit}", applies_to: [tok]}}]
minimum_commitment: {{amount: "{minimum}"}}
"""


def plan_of(threshold: str | None, advance: bool, credit: str, minimum: str, currency: str):
    return parse_plan_text(PLAN.format(
        threshold=f'invoice_when_due_reaches: "{threshold}"' if threshold else "", credit=credit, minimum=minimum,
        advance="at_period_start" if advance else "at_period_end", currency=currency))


@st.composite
def months(draw):
    events = []
    for i in range(draw(st.integers(0, 60))):
        at = OCT.start + timedelta(minutes=draw(st.integers(0, 31 * 24 * 60 - 1)))
        if draw(st.booleans()):
            events.append(UsageEvent(id=f"r{i}", customer="c", type="request", timestamp=at, properties={}))
        else:
            events.append(UsageEvent(id=f"t{i}", customer="c", type="llm.call", timestamp=at,
                                     properties={"units": draw(st.integers(0, 900))}))
    return events


@settings(max_examples=50, deadline=None)
@given(events=months(), threshold=st.sampled_from(["0.01", "1", "3.33", "25.00"]), advance=st.booleans(),
       credit=st.sampled_from(["0", "2.50", "40"]), minimum=st.sampled_from(["0", "45.00"]),
       currency=st.sampled_from(["USD", "JPY"]), hours=st.sampled_from([12, 24, 96]),
       seats=st.lists(st.tuples(st.integers(1, 30), st.integers(0, 6)), max_size=3))
def test_the_periods_invoices_add_up_to_its_one_invoice(events, threshold, advance, credit, minimum, currency,
                                                         hours, seats):
    if currency == "JPY" and threshold in ("0.01", "3.33"):
        threshold = "1"
    plan = plan_of(threshold, advance, credit, minimum, currency)
    history = [(OCT.start, 2), *((OCT.start + timedelta(days=day, hours=5), n) for day, n in seats)]
    docs = schedule(plan, "c", OCT, events, lambda e: D(0), history, check_every=timedelta(hours=hours))
    one_usage = aggregate(plan, events, OCT.start, OCT.end)
    one = rate_period(RatingInput(plan, "c", OCT, one_usage, history, provider_cost=D(0)))
    assert sum((d.invoice.total for d in docs), D(0)) == one.total
    for d in docs:
        assert d.invoice.total == sum((ln.amount for ln in d.invoice.lines), D(0))
        if d.when == "threshold":
            assert d.invoice.total >= D(threshold)
            assert OCT.start < d.issued_at < OCT.end
    assert [d.when for d in docs][-1] == "end" and (docs[0].when == "start") == advance


def test_accrued_is_per_key_less_what_was_billed():
    plan = plan_of("5", False, "0", "0", "USD")
    usage = {"req": aggregate(plan, [UsageEvent(id=f"r{i}", customer="c", type="request",
                                                timestamp=OCT.start + timedelta(hours=i), properties={})
                                     for i in range(15)], OCT.start, OCT.end)["req"]}
    rated = rate_period(RatingInput(plan, "c", OCT, usage))
    billed = Billed()
    diffs, kinds, names = accrued(rated, billed)
    assert diffs == {"req": 700}  # 15 requests, 5 included: 10 x 0.70
    assert reaches(diffs, D("5"), "USD") and not reaches(diffs, D("7.01"), "USD")
    billed.add(diffs, kinds, names)
    assert accrued(rated, billed)[0] == {}
    assert [(ln.key, ln.amount, str(ln.kind)) for ln in taken_back(billed, "USD")] == [("req", D("-7.00"), "usage")]
