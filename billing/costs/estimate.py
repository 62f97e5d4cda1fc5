"""A call's provider cost estimated before it runs (pure): the cost book's price of the
requested tokens for the requested model, every token at the dearer of the model's
standard input and output rates (an estimate that a cost guard may hold: never below
what the call can cost on the standard card)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from billing.costs.book import PER_TOKENS, CostBook, UnknownModel


def estimate_cost(book: CostBook, model: str, tokens: int, at: datetime) -> Decimal | None:
    """``tokens`` x the model's dearer per-token rate at ``at``; None for a model the book
    cannot price (the call then holds no cost estimate)."""
    try:
        price = book.price_for(model, at)
    except UnknownModel:
        return None
    return Decimal(tokens) * max(price.input, price.output) / PER_TOKENS
