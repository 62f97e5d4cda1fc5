"""Exact statistics of the reports (hypothesis): revenue allocation in whole cents, usage
bands and the P25 / P50 / P90 / P99 customers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from billing.reports.margins import CustomerMargin, MarginReport
from billing.reports.stats import allocate, percentile, usage_bands

D = Decimal
CENT = D("0.01")

cents = st.integers(min_value=-10**7, max_value=10**7).map(lambda n: D(n) * CENT)
weights = st.lists(st.tuples(st.text("abcdefgh", min_size=1, max_size=3), st.integers(0, 10**6)), min_size=1,
                   max_size=8, unique_by=lambda kv: kv[0])


@given(amount=cents, ws=weights)
def test_allocation_is_whole_cents_summing_exactly_within_a_cent_of_the_share(amount, ws):
    out = allocate(amount, ws, CENT)
    assert set(out) == {k for k, _ in ws}
    assert sum(out.values(), D(0)) == amount
    assert all(v == v.quantize(CENT) for v in out.values())
    total = sum(w for _, w in ws)
    for k, w in ws:
        exact = Fraction(amount) * (Fraction(w, total) if total else Fraction(1, len(ws)))
        assert abs(Fraction(out[k]) - exact) < Fraction(1, 100)
    assert allocate(amount, ws, CENT) == out  # deterministic


def test_allocation_examples():
    assert allocate(D("20.50"), [("search", 55), ("support-chat", 110)], CENT) == {"search": D("6.83"),
                                                                                  "support-chat": D("13.67")}
    assert allocate(D("0.02"), [("a", 1), ("b", 1), ("c", 1)], CENT) == {"a": D("0.01"), "b": D("0.01"), "c": D(0)}
    assert allocate(D(10), [("a", 0), ("b", 0)], CENT) == {"a": D(5), "b": D(5)}  # nothing to weigh: evenly
    assert allocate(D("0.005"), [("a", 1), ("b", 1)], CENT) == {"a": D("0.0025"), "b": D("0.0025")}  # not cents


@given(st.dictionaries(st.text("xyz0123", min_size=1, max_size=4), st.integers(0, 5000), min_size=1, max_size=40))
def test_usage_bands_are_monotone_in_usage(values):
    bands = usage_bands(values)
    order = ["light", "moderate", "regular", "heavy", "power"]
    rank = {k: order.index(b.split(" ")[0]) for k, b in bands.items()}
    for a in values:
        for b in values:
            if values[a] < values[b]:
                assert rank[a] <= rank[b]
    p25 = percentile([D(v) for v in values.values()], 25)
    assert all(b.startswith("light") == (D(values[k]) <= p25) for k, b in bands.items())


@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 10**6)), min_size=1, max_size=60))
def test_segment_rows_are_customers_at_the_usage_percentiles(rows):
    customers = [CustomerMargin(f"c{i:03d}", "p@v1", D(20), "invoiced", D(cost) / 100, n, n)
                 for i, (n, cost) in enumerate(rows)]
    report = MarginReport("2026-10", datetime(2026, 11, 1, tzinfo=UTC), customers)
    segments = report.usage_segments()
    assert [s.percentile for s in segments] == [25, 50, 90, 99]
    interactions = [D(c.interactions) for c in customers]
    for s in segments:  # the row is one real customer, at that percentile of interactions
        assert s.customer in customers
        assert D(s.customer.interactions) == percentile(interactions, s.percentile)
    assert [s.customer.interactions for s in segments] == sorted(s.customer.interactions for s in segments)
