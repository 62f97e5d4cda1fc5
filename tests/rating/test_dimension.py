"""Dimension prices rated through the real engine (``meters.aggregate`` -> ``rate_period``)
against a plain reference written here, on random events: per-value totals, the included
units drawn in table order (then other values in text order, then events without the
value), each value's own price, one rounding for the charge."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from hypothesis import given, settings, strategies as st

from billing.catalog import parse_plan_text
from billing.events import UsageEvent
from billing.rating.engine import RatingInput, rate_period
from billing.rating.meters import aggregate
from billing.rating.periods import calendar_month

D = Decimal
OCT = calendar_month(2026, 10)
PLAN = parse_plan_text("""
plan: by-model
name: Priced by model
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: tokens, event_type: llm.call, aggregation: sum, property: output_tokens}
charges:
  - key: tokens
    name: Output tokens
    meter: tokens
    included: {pooled: 2500}
    price:
      model: dimension
      property: model
      prices:
        o3: {model: per_unit, unit_price: "0.004"}
        gpt-4o: {model: graduated, tiers: [{up_to: 1000, unit_price: "0.002"}, {unit_price: "0.001"}]}
        claude: {model: package, package_size: 100, package_price: "0.15"}
      default: {model: per_unit, unit_price: "0.0033"}
""", "by-model.yaml")
ORDER = ["o3", "gpt-4o", "claude"]


def price_of(model: str | None, units: Decimal) -> Decimal:
    """Each value's price, written out by hand."""
    if model == "o3":
        return units * D("0.004")
    if model == "gpt-4o":
        return min(units, D(1000)) * D("0.002") + max(units - 1000, D(0)) * D("0.001")
    if model == "claude":
        return (units / 100).to_integral_value(rounding=ROUND_CEILING) * D("0.15")
    return units * D("0.0033")


def reference(events: list[UsageEvent]) -> Decimal:
    per_model: dict[str | None, Decimal] = {}
    for e in {e.id: e for e in events}.values():
        model = e.properties.get("model")
        per_model[model] = per_model.get(model, D(0)) + D(e.properties.get("output_tokens", 0))
    listed = [m for m in ORDER if m in per_model]
    others = sorted(m for m in per_model if m is not None and m not in ORDER)
    left, total = D(2500), D(0)
    for model in listed + others + ([None] if None in per_model else []):
        take = min(left, per_model[model])
        left -= take
        total += price_of(model, per_model[model] - take)
    return total.quantize(D("0.01"), rounding=ROUND_HALF_UP)  # once, half away from zero (money.round_line)


@st.composite
def calls(draw) -> list[UsageEvent]:
    out = []
    for i in range(draw(st.integers(0, 30))):
        props = {"output_tokens": draw(st.integers(0, 900))}
        model = draw(st.sampled_from(["o3", "gpt-4o", "claude", "mistral", "llama", None]))
        if model:
            props["model"] = model
        out.append(UsageEvent(id=f"c{i}", customer="acme", type="llm.call",
                              timestamp=OCT.start + timedelta(hours=draw(st.integers(0, 743))), properties=props))
    return out + draw(st.lists(st.sampled_from(out), max_size=3)) if out else out


@settings(max_examples=150, deadline=None)
@given(events=calls())
def test_dimension_charge_equals_the_reference(events):
    inv = rate_period(RatingInput(PLAN, "acme", OCT, aggregate(PLAN, events, OCT.start, OCT.end)))
    assert inv.total == reference(events)
    # one line per value billed past the included units, its value in the description
    billed = [ln for ln in inv.lines if ln.amount]
    assert all("(model " in ln.description for ln in billed)


def test_included_units_go_to_the_listed_values_first():
    events = [UsageEvent(id=f"{m}{i}", customer="acme", type="llm.call", timestamp=OCT.start + timedelta(hours=i),
                         properties={"model": m, "output_tokens": n} if m else {"output_tokens": n})
              for i, (m, n) in enumerate([("mistral", 500), ("o3", 2000), ("gpt-4o", 1500), (None, 10)])]
    inv = rate_period(RatingInput(PLAN, "acme", OCT, aggregate(PLAN, events, OCT.start, OCT.end)))
    # o3 takes 2,000 of the 2,500 included, gpt-4o the other 500: 1,000 left at 0.002 = 2.00;
    # mistral (default price) 500 x 0.0033 = 1.65; no model: 10 x 0.0033 = 0.033
    assert [(ln.description, ln.quantity, ln.amount) for ln in inv.lines] == [
        ("Output tokens: 4010 used, 2500 included", D(2500), D("0.00")),
        ("Output tokens (model gpt-4o, tier 1-1000)", D(1000), D("2.00")),
        ("Output tokens (model mistral)", D(500), D("1.65")),
        ("Output tokens (model (none))", D(10), D("0.03")),
    ]
    assert inv.total == D("3.68")
