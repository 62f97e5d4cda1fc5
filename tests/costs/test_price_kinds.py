"""The price kinds of the cost book: 1-hour cache writes, context-length tiers, service tiers
(batch, priority, flex), per-unit prices; their validation (collect-all ``file:line: path:
message``) and the worked example of the README (section "Cost book: every price kind")."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from billing.costs import (CostBook, CostBookError, UnknownModel, UnknownServiceTier, cost_breakdown, dump_yaml,
                           event_cost, extra_fields)
from billing.errors import BillingError, ErrorCode
from billing.events import UsageEvent
from tests.support.costs import WORKED_EXAMPLE

D = Decimal
AT = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
SHEET = """
provider: test
source: https://example.test/pricing
retrieved: 2026-12-07
batch_discount: "0.5"
models:
  - model: long-one
    effective_from: 2026-01-01
    input: "3"
    output: "15"
    cache_read: "0.30"
    cache_write: "3.75"
    cache_write_1h: "6"
    context_tiers:
      - {above: 200000, input: "6", output: "22.50", cache_read: "0.60", cache_write: "7.50", cache_write_1h: "12"}
    service_tiers:
      priority: {input: "5", output: "25", cache_read: "0.50",
                 context_tiers: [{above: 200000, input: "10", output: "37.50", cache_read: "1"}]}
      flex: {input: "1.50", output: "7.50", cache_read: "0.15"}
    per_unit: {web_search_requests: "0.01", input_images: "0.002"}
  - model: plain
    effective_from: 2026-01-01
    input: "2"
    output: "8"
  - model: own-batch
    effective_from: 2026-01-01
    input: "2"
    output: "12"
    cache_read: "0.20"
    batch_discount: "0"
    service_tiers:
      batch: {input: "1", output: "6", cache_read: "0.20"}
"""
BOOK = CostBook.from_yaml_text(SHEET, origin="sheet.yaml")


def ev(model: str = "long-one", **props) -> UsageEvent:
    return UsageEvent(id="e1", customer="acme", type="llm.call", timestamp=AT, properties={"model": model, **props})


# -- each price kind ----------------------------------------------------------------------------


def test_rates_default_in_a_chain():
    plain = BOOK.price_for("plain", AT)
    assert (plain.cache_read, plain.cache_write, plain.cache_write_1h, plain.reasoning) == (D(2), D(2), D(2), D(8))
    assert BOOK.price_for("long-one", AT).service_tiers["flex"].cache_write_1h == D("1.50")  # the tier's input


def test_one_hour_cache_writes_are_the_part_of_cache_writes_at_their_own_rate():
    cost = cost_breakdown(ev(cache_write_tokens=100_000, cache_write_1h_tokens=40_000), BOOK)
    assert cost == {"cache_write": D("0.225"), "cache_write_1h": D("0.24")}  # 60k x 3.75 + 40k x 6 per 1M
    assert event_cost(ev(cache_write_tokens=40_000, cache_write_1h_tokens=40_000), BOOK) == D("0.24")
    with pytest.raises(BillingError) as info:
        event_cost(ev(cache_write_tokens=10, cache_write_1h_tokens=11), BOOK)
    assert info.value.code == ErrorCode.EVENT_INVALID


def test_a_prompt_over_the_threshold_prices_the_whole_request_at_the_tier():
    # the prompt is input + cached input + cache writes: 150k + 30k + 20k = 200k, not over
    at_limit = ev(input_tokens=150_000, cache_read_tokens=30_000, cache_write_tokens=20_000, output_tokens=1_000)
    assert event_cost(at_limit, BOOK) == D("0.45") + D("0.009") + D("0.075") + D("0.015")
    over = ev(input_tokens=150_001, cache_read_tokens=30_000, cache_write_tokens=20_000, output_tokens=1_000)
    assert cost_breakdown(over, BOOK) == {"input": D("0.900006"), "cache_read": D("0.018"),
                                          "cache_write": D("0.15"), "output": D("0.0225")}
    # output and reasoning do not count towards the prompt
    assert event_cost(ev(input_tokens=1, output_tokens=10_000_000), BOOK) == D("150.000003")


def test_service_tiers_select_their_card():
    usage = {"input_tokens": 100_000, "output_tokens": 100_000, "cache_read_tokens": 100_000}
    standard = (D(3) + D(15) + D("0.30")) / 10
    assert event_cost(ev(**usage), BOOK) == standard
    for name in ("standard", "default", "auto", " Standard "):
        assert event_cost(ev(**usage, service_tier=name), BOOK) == standard
    assert event_cost(ev(**usage, service_tier="batch"), BOOK) == standard / 2  # batch_discount
    assert event_cost(ev(**usage, batch=True), BOOK) == standard / 2
    assert event_cost(ev(**usage, service_tier="priority"), BOOK) == (D(5) + D(25) + D("0.50")) / 10
    flex = (D("1.50") + D("7.50") + D("0.15")) / 10
    assert event_cost(ev(**usage, service_tier="flex"), BOOK) == flex
    # service_tier decides over the batch flag (the client records both for OpenAI flex)
    assert event_cost(ev(**usage, service_tier="flex", batch=True), BOOK) == flex
    # a tier's own context tiers
    assert event_cost(ev(input_tokens=300_000, service_tier="priority"), BOOK) == D(3)
    # a batch card replaces the discount
    assert event_cost(ev("own-batch", **usage, service_tier="batch"), BOOK) == (D(1) + D(6) + D("0.20")) / 10


def test_a_tier_the_model_has_no_rates_for_leaves_the_event_unpriced():
    for model, tier in (("plain", "priority"), ("long-one", "scale"), ("plain", "flex")):
        with pytest.raises(UnknownServiceTier, match=f"no '{tier}' service tier rates for model '{model}'") as info:
            event_cost(ev(model, input_tokens=10, service_tier=tier), BOOK)
        assert isinstance(info.value, UnknownModel) and info.value.code == ErrorCode.UNKNOWN_MODEL
    assert event_cost(ev("plain", input_tokens=1_000_000, service_tier="batch"), BOOK) == D(1)


def test_per_unit_prices_are_per_call_in_every_tier():
    assert cost_breakdown(ev(web_search_requests=3, input_images=10), BOOK) == {
        "web_search_requests": D("0.03"), "input_images": D("0.02")}
    assert cost_breakdown(ev(web_search_requests=3, service_tier="batch"), BOOK) == {"web_search_requests": D("0.03")}
    assert cost_breakdown(ev("plain", web_search_requests=3), BOOK) == {}  # this model prices no searches
    for bad, code in ((-1, ErrorCode.NEGATIVE_QUANTITY), ("many", ErrorCode.EVENT_INVALID)):
        with pytest.raises(BillingError) as info:
            event_cost(ev(web_search_requests=bad), BOOK)
        assert info.value.code == code


def test_new_kinds_round_trip_through_yaml_and_scale():
    assert CostBook.from_yaml_text(dump_yaml(BOOK)) == BOOK
    assert extra_fields(BOOK.price_for("plain", AT)) == {}
    assert set(extra_fields(BOOK.price_for("long-one", AT))) == {"cache_write_1h", "context_tiers", "service_tiers",
                                                                  "per_unit"}
    event = ev(input_tokens=300_000, web_search_requests=2, service_tier="priority")
    assert event_cost(event, BOOK.scaled("1.1")) == event_cost(event, BOOK) * D("1.1")


# -- validation: every problem at once, with its file, line and path -------------------------------


def test_data_file_problems_are_collected_with_file_line_and_path():
    bad = """provider: test
source: s
retrieved: 2026-12-07
models:
  - model: a
    effective_from: 2026-01-01
    input: "1"
    output: "2"
    context_tiers:
      - {above: 1000, input: "2", output: "3"}
      - {above: 1000, input: "4", output: "3"}
    service_tiers:
      turbo: {input: "1", output: "2"}
      flex: {input: "-2", output: "3"}
    per_unit: {input_tokens: "1", "Web Search": "0.01"}
  - model: b
    effective_from: 2026-01-01
    output: "2"
    cache_write_1h: "x"
"""
    with pytest.raises(CostBookError) as info:
        CostBook.from_yaml_text(bad, origin="prices.yaml")
    problems = info.value.details
    assert len(problems) == 6, problems
    expected = [r"prices\.yaml:10: models\[0\]\.context_tiers: two context tiers above the same prompt size.*\(a\)",
                r"prices\.yaml:14: models\[0\]\.service_tiers\.flex\.input: must not be negative \(a\)",
                r"prices\.yaml:13: models\[0\]\.service_tiers\.turbo: Input should be 'batch', 'priority' or 'flex' \(a\)",
                r"prices\.yaml:15: models\[0\]\.per_unit: .*'Web Search' is not a property name.*"
                r"'input_tokens' is a token count.*",
                r"prices\.yaml:16: models\[1\]\.input: Field required \(b\)",
                r"prices\.yaml:19: models\[1\]\.cache_write_1h: not a finite number: 'x' \(b\)"]
    import re

    for pattern in expected:
        assert any(re.fullmatch(pattern, p) for p in problems), (pattern, problems)
    assert str(info.value.message).count("\n") == 5  # one problem a line


def test_costs_add_reports_every_problem_of_the_file(tmp_path):
    from typer.testing import CliRunner

    from billing.cli import app

    path = tmp_path / "bad.yaml"
    path.write_text('provider: t\nsource: s\nretrieved: 2026-12-07\nmodels:\n'
                    '  - {model: a, effective_from: 2026-01-01, input: "1", output: "2", service_tiers: {turbo: {}}}\n'
                    '  - {model: b, effective_from: 2026-01-01, input: "-1", output: "2"}\n')
    result = CliRunner(env={"COLUMNS": "400"}).invoke(app, ["costs", "add", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.replace(f"error: cost data: {path}", str(path)).splitlines()
    assert lines == [f"{path}:5: models[0].service_tiers.turbo: Input should be 'batch', 'priority' or 'flex' (a)",
                     f"{path}:5: models[0].service_tiers.turbo.input: Field required (a)",
                     f"{path}:5: models[0].service_tiers.turbo.output: Field required (a)",
                     f"{path}:6: models[1].input: must not be negative (b)"]


# -- properties ------------------------------------------------------------------------------------

counts = st.integers(0, 400_000)
TIERS = st.sampled_from(["standard", "batch", "priority", "flex"])


@st.composite
def usages(draw) -> dict:
    written = draw(counts)
    return {"input_tokens": draw(counts), "output_tokens": draw(counts), "cache_read_tokens": draw(counts),
            "cache_write_tokens": written, "cache_write_1h_tokens": draw(st.integers(0, written)),
            "reasoning_tokens": draw(counts), "web_search_requests": draw(st.integers(0, 20))}


def _prompt(u: dict) -> int:
    return u["input_tokens"] + u["cache_read_tokens"] + u["cache_write_tokens"]


@settings(max_examples=200, deadline=None)
@given(a=usages(), b=usages(), tier=TIERS)
def test_cost_is_additive_within_one_context_tier(a, b, tier):
    both = {k: a[k] + b[k] for k in a}
    assume((_prompt(both) <= 200_000) or (_prompt(a) > 200_000 and _prompt(b) > 200_000))
    assert event_cost(ev(**both, service_tier=tier), BOOK) == (
        event_cost(ev(**a, service_tier=tier), BOOK) + event_cost(ev(**b, service_tier=tier), BOOK))


@settings(max_examples=200, deadline=None)
@given(u=usages(), key=st.sampled_from(["input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
                                        "reasoning_tokens", "web_search_requests"]),
       more=st.integers(1, 300_000), tier=TIERS)
def test_more_usage_never_costs_less_across_thresholds(u, key, more, tier):
    """Monotone: the tiers above a threshold never price a component lower (also a property of
    the shipped sheets, below)."""
    grown = {**u, key: u[key] + more}
    assert event_cost(ev(**grown, service_tier=tier), BOOK) >= event_cost(ev(**u, service_tier=tier), BOOK)


def test_shipped_context_tiers_never_price_lower_than_their_base():
    for entry in CostBook.load_default():
        for card in (entry, *entry.service_tiers.values()):
            for tier in card.context_tiers:
                assert all(tier.rates()[n] >= card.rates()[n] for n in tier.rates()), (entry.model, tier)


@settings(max_examples=200, deadline=None)
@given(u=usages(), tier=TIERS)
def test_cost_is_the_exact_sum_of_its_components(u, tier):
    parts = cost_breakdown(ev(**u, service_tier=tier), BOOK)
    assert sum(parts.values(), D(0)) == event_cost(ev(**u, service_tier=tier), BOOK)
    # each component is tokens x rate / 1M (x 0.5) exactly: at most 6 + 2 (+ 1) decimal places here
    assert all(p == p.quantize(D("1E-9")) for p in parts.values())


# -- the README's worked example -------------------------------------------------------------------

def test_the_worked_example_of_the_readme():
    event = UsageEvent(id="w1", customer="acme", type="llm.call", timestamp=AT, properties=WORKED_EXAMPLE)
    book = CostBook.load_default()
    assert cost_breakdown(event, book) == {
        "input": D("0.45"), "cache_read": D("0.012"), "cache_write": D("0.0375"), "cache_write_1h": D("0.12"),
        "output": D("0.09"), "reasoning": D("0.0225"), "web_search_requests": D("0.03")}
    assert event_cost(event, book) == D("0.762")
    at_the_threshold = event.model_copy(update={"properties": {**WORKED_EXAMPLE, "input_tokens": 130_000}})
    assert event_cost(at_the_threshold, book) == D("0.38475")


def test_the_shipped_book_prices_a_long_gemini_25_pro_request_at_its_long_context_rate(engine):  # noqa: F811
    """Issue 14's check: over 200k prompt tokens, the whole request at the >200k rates
    ($2.50 / $15 per 1M instead of $1.25 / $10), in the book and as the ledger stores it."""
    from billing.ledger.ingest import Ledger
    from tests.support.db import stored_events
    from tests.support.ledger import CATALOG, _setup

    book = CostBook.load_default()
    long = UsageEvent(id="long", customer="acme", type="llm.call", timestamp=AT,
                      properties={"model": "gemini-2.5-pro", "input_tokens": 250_000, "output_tokens": 2_000})
    short = long.model_copy(update={"properties": {**long.properties, "input_tokens": 200_000}})
    assert event_cost(long, book) == D("0.625") + D("0.03")  # 250k x 2.50/1M + 2k x 15/1M
    assert event_cost(short, book) == D("0.25") + D("0.02")  # at 200k: not over, the base rates
    _setup(engine)
    raw = {"id": "long", "customer": "acme", "type": "llm.call", "timestamp": "2026-11-10T12:00:00Z",
           "properties": dict(long.properties)}
    assert Ledger(engine, CATALOG, book=book).record([raw]).accepted == 1
    (row,) = stored_events(engine)
    assert row[6] == int((D("0.625") + D("0.03")) * 10**12)  # cost_pico
