"""A call's cost estimated before it runs (``billing.costs.estimate``): the requested tokens at
the model's dearer standard rate, never below what the call can cost on the standard card."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

from billing.costs import CostBook, event_cost
from billing.costs.estimate import estimate_cost
from billing.events import UsageEvent

AT = datetime(2026, 10, 10, tzinfo=UTC)
BOOK = CostBook.load_default()


def test_the_estimate_prices_every_token_at_the_dearer_rate():
    assert estimate_cost(BOOK, "claude-opus-4-1", 200_000, AT) == D(15)  # 200k x $75 / 1M
    assert estimate_cost(BOOK, "gpt-4o-mini", 1_000_000, AT) == D("0.60")
    assert estimate_cost(BOOK, "no-such-model", 1000, AT) is None


def test_the_estimate_is_never_below_the_calls_cost_however_the_tokens_split():
    for inp in (0, 50_000, 100_000, 200_000):
        event = UsageEvent.model_validate({"id": "e", "customer": "c", "type": "llm.call", "timestamp": AT,
                                           "properties": {"model": "claude-sonnet-4-5", "input_tokens": inp,
                                                          "output_tokens": 200_000 - inp}})
        assert event_cost(event, BOOK) <= estimate_cost(BOOK, "claude-sonnet-4-5", 200_000, AT)
