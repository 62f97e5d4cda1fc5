"""Cost book: what each model costs us, per provider list price, effective-dated (pure).

Usage::

    from billing.costs import CostBook, event_cost
    book = CostBook.load_default()
    book.price_for("claude-sonnet-4-5", at).input    # Decimal per 1M tokens at instant `at`
    event_cost(event, book)                          # exact Decimal, never rounded here
"""

from billing.costs.book import (
    PER_TOKENS,
    PRICE_FIELDS,
    CostBook,
    CostBookError,
    ModelPrice,
    TOKEN_PROPERTIES,
    UnknownModel,
    UnknownServiceTier,
    cost_breakdown,
    dump_yaml,
    event_cost,
    event_tier,
    extra_fields,
    prompt_tokens,
    token_counts,
)
from billing.costs.rates import SERVICE_TIERS, TOKEN_RATES, ContextTier, RateCard, Rates
from billing.costs.litellm import ImportResult, import_litellm

__all__ = [
    "PER_TOKENS",
    "PRICE_FIELDS",
    "CostBook",
    "CostBookError",
    "ImportResult",
    "ModelPrice",
    "UnknownModel",
    "UnknownServiceTier",
    "SERVICE_TIERS",
    "TOKEN_PROPERTIES",
    "TOKEN_RATES",
    "ContextTier",
    "RateCard",
    "Rates",
    "event_tier",
    "extra_fields",
    "prompt_tokens",
    "token_counts",
    "cost_breakdown",
    "dump_yaml",
    "event_cost",
    "import_litellm",
]
