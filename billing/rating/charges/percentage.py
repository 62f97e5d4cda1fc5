"""Percentage of transaction amounts (the meter sums them) plus a fixed fee per transaction.

Per transaction, in time order: the first ``free_units`` transactions and the first
``free_amount`` of amount are free; each charged transaction costs
amount x rate + fixed_fee, clamped to [min_per_transaction, max_per_transaction].
Without per-transaction rules the aggregate (sum, count) suffices."""

from decimal import Decimal

from billing.catalog.schema import PercentagePrice
from billing.rating.types import Billable, Part

ZERO = Decimal(0)


def needs_transactions(price: PercentagePrice) -> bool:
    return (price.min_per_transaction is not None or price.max_per_transaction is not None
            or price.free_units > 0 or price.free_amount > 0)


def rate(price: PercentagePrice, usage: Billable) -> list[Part]:
    if not needs_transactions(price):
        parts = [Part(f"{price.rate * 100:f}%".replace(".00%", "%"), usage.units, price.rate,
                      usage.units * price.rate)]
        if price.fixed_fee and usage.events:
            parts.append(Part("fixed fee per transaction", Decimal(usage.events), price.fixed_fee,
                              usage.events * price.fixed_fee))
        return parts

    base = ZERO
    charged = 0
    clamp_delta = ZERO
    free_left = price.free_amount
    for index, amount in enumerate(usage.transactions):
        if index < price.free_units:
            continue
        if free_left > 0:
            taken = min(free_left, amount)
            free_left -= taken
            amount -= taken
            if amount == 0:
                continue
        raw = amount * price.rate + price.fixed_fee
        fee = raw
        if price.min_per_transaction is not None:
            fee = max(fee, price.min_per_transaction)
        if price.max_per_transaction is not None:
            fee = min(fee, price.max_per_transaction)
        base += amount
        charged += 1
        clamp_delta += fee - raw
    parts = [Part(f"{price.rate * 100:f}%", base, price.rate, base * price.rate)]
    if price.fixed_fee and charged:
        parts.append(Part("fixed fee per transaction", Decimal(charged), price.fixed_fee, charged * price.fixed_fee))
    if clamp_delta:
        parts.append(Part("per-transaction min/max", Decimal(charged), None, clamp_delta))
    return parts
