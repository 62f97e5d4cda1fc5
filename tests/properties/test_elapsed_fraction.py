"""The decision's faster copies of a plan's rules hold equal to the rule (pure):

* ``quota.guards.elapsed_fraction`` (the margin floor's earned share of the fees) is
  ``periods.prorate_fraction`` of the period elapsed, for any UTC period and instant (inside,
  at its edges, outside, and in another time zone);
* ``quota.budgets.passed`` (what ingested usage crossed) names exactly the budgets that
  ``judge`` finds passed by a request of nothing (zero units, cost and amount), for budgets
  the request's properties are in scope of."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.quota.budgets import Budget, BudgetUse, judge, passed
from billing.quota.guards import elapsed_fraction
from billing.rating.periods import Period, prorate_fraction

BASE = datetime(2026, 1, 1, tzinfo=UTC)


@settings(max_examples=400, deadline=None)
@given(start=st.integers(0, 10**13), length=st.integers(1, 4 * 10**13), at=st.integers(-10**13, 6 * 10**13),
       offset=st.sampled_from([None, 0, 60, -330]))
def test_elapsed_fraction_is_prorate_fraction(start, length, at, offset):
    s = BASE + timedelta(microseconds=start)
    e = s + timedelta(microseconds=length)
    now = s + timedelta(microseconds=at)
    if offset is not None:
        now = now.astimezone(timezone(timedelta(minutes=offset)))
    try:
        expected = prorate_fraction(s, now, Period(s, e))
    except ValueError as exc:  # now before the start: the rule's error, the copy's too
        try:
            elapsed_fraction(s, now, e)
        except ValueError as again:
            assert str(again) == str(exc)
            return
        raise AssertionError("elapsed_fraction accepted what prorate_fraction refuses")
    got = elapsed_fraction(s, now, e)
    assert got == expected and str(got) == str(expected)


_budgets = st.builds(
    lambda i, measure, amount, enforcement, scoped: Budget(
        i, f"b{i}", measure, Decimal(amount), "daily", enforcement, "alert" if enforcement == "soft" else "deny",
        "team" if scoped else None, "research" if scoped else None, "requests" if measure == "units" else None),
    st.integers(1, 10**6), st.sampled_from(["billed", "cost", "units"]), st.integers(1, 1000),
    st.sampled_from(["soft", "hard"]), st.booleans())


@settings(max_examples=300, deadline=None)
@given(budgets=st.lists(_budgets, max_size=6, unique_by=lambda b: b.id),
       used=st.lists(st.one_of(st.none(), st.integers(0, 1200).map(Decimal)), min_size=6, max_size=6),
       counters=st.fixed_dictionaries({"billed": st.integers(0, 1200).map(Decimal),
                                       "cost": st.integers(0, 1200).map(Decimal),
                                       "units:requests": st.integers(0, 1200).map(Decimal)}))
def test_passed_is_judge_of_nothing(budgets, used, counters):
    uses = tuple(BudgetUse(b, BASE, BASE + timedelta(days=1), u) for b, u in zip(budgets, used))
    hits, _, _ = judge(uses, "requests", {"team": "research"}, Decimal(0), Decimal(0), Decimal(0), counters)
    assert sorted((h.budget.id, h.value) for h in hits) == [(h.budget.id, h.value) for h in passed(uses, counters)]
    assert [h.budget.id for h in passed(uses, counters, "soft")] == sorted(
        h.budget.id for h in hits if h.budget.enforcement == "soft")
