"""The plan settings of issue 14 items 1-2: ``billing.advance_fees``, a seat fee's
``on_decrease`` and ``invoice_when_due_reaches`` are validated like every construct (a
named problem at its path and line, never a silent default), collected with the plan's
other problems."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.catalog import PlanInvalid, parse_plan_text

HEAD = "plan: p\nname: P\neffective_from: 2026-01-01T00:00:00Z\n"
METERED = ("meters: [{key: m, event_type: request}]\n"
           "charges: [{key: c, meter: m, price: {model: per_unit, unit_price: 1}}]\n")


def problems(body: str) -> list[str]:
    with pytest.raises(PlanInvalid) as info:
        parse_plan_text(HEAD + body, "p.yaml")
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize("value, currency, why", [
    ('"0"', "USD", "greater than 0"),
    ("0", "USD", "greater than 0"),
    ('"-5"', "USD", "greater than 0"),
    ('"0.001"', "USD", "at least the minor unit of USD (0.01)"),
    ('"0.5"', "JPY", "at least the minor unit of JPY (1)"),
    ('"1.5"', "JPY", "more decimals than the minor unit of JPY (1)"),
    ('"20.005"', "USD", "more decimals than the minor unit of USD (0.01)"),
    ('"twenty"', "USD", "invoice_when_due_reaches"),
])
def test_a_bad_threshold_is_a_problem_naming_its_path(value, currency, why):
    found = problems(f"currency: {currency}\ninvoice_when_due_reaches: {value}\n" + METERED)
    assert len(found) == 1 and found[0].startswith("p.yaml:5: invoice_when_due_reaches: ") and why in found[0]


def test_threshold_problems_are_collected_with_the_others():
    found = problems('invoice_when_due_reaches: "0.001"\nbilling: {advance_fees: at_start}\n'
                     'fees: [{type: per_seat, key: s, unit_price: 1, on_decrease: refund}]\n' + METERED)
    assert found == [
        "p.yaml:4: invoice_when_due_reaches: must be at least the minor unit of USD (0.01), got 0.001",
        "p.yaml:5: billing.advance_fees: Input should be 'at_period_end' or 'at_period_start'",
        "p.yaml:6: fees[0].on_decrease: Input should be 'next_period' or 'credit_unused'"]


def test_good_settings_parse():
    plan = parse_plan_text(HEAD + 'currency: KWD\ninvoice_when_due_reaches: "0.125"\n'
                           'billing: {advance_fees: at_period_start}\n'
                           'fees: [{type: per_seat, key: s, unit_price: 1, on_decrease: credit_unused}]\n' + METERED)
    assert plan.invoice_when_due_reaches == Decimal("0.125") and plan.billing.in_advance
    assert plan.fees[0].on_decrease == "credit_unused"
    default = parse_plan_text(HEAD + METERED)
    assert default.invoice_when_due_reaches is None and not default.billing.in_advance
    assert default.billing.advance_fees == "at_period_end"
