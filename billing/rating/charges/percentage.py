"""Percentage of transaction amounts (the meter sums them) plus a fixed fee per transaction.

Per transaction, in time order, each charged transaction costs amount x rate + fixed_fee,
clamped to [min_per_transaction, max_per_transaction]. The free allowances end together:
a transaction is free while every allowance the price sets lasts -- ``free_units`` (the
first N transactions) and ``free_amount`` (that much transaction amount) -- and the
transaction that exhausts the free amount pays for its excess plus the fixed fee; after
it, or after the last free transaction, nothing is free. Without per-transaction rules
the aggregate (sum, count) suffices.

The charge's amount is the exact sum of its per-transaction fees (rounded once by the
charge arithmetic); the parts below -- the rate on the charged amount, the fixed fees,
the min/max adjustment -- are that sum's breakdown."""

from decimal import Decimal

from billing.catalog.schema import PercentagePrice
from billing.rating.types import Billable, Part

ZERO = Decimal(0)


def needs_transactions(price: PercentagePrice) -> bool:
    return price.per_transaction


def charged_transactions(price: PercentagePrice, transactions: tuple[Decimal, ...]) -> list[Decimal]:
    """The amount charged of each transaction that is not free, in order (the free
    allowances applied)."""
    free = price.free_units > 0 or price.free_amount > 0
    units_left, amount_left = price.free_units, price.free_amount
    out: list[Decimal] = []
    for amount in transactions:
        if free:
            if price.free_units > 0:
                units_left -= 1
                free = units_left > 0
            if price.free_amount > 0:
                if amount <= amount_left:
                    amount_left -= amount
                    free = free and amount_left > 0
                    continue  # inside the free amount (and a free transaction, if counted)
                amount -= amount_left  # exhausts the free amount: pays for its excess
                free = False
                out.append(amount)
                continue
            continue  # one of the free transactions
        out.append(amount)
    return out


def rate(price: PercentagePrice, usage: Billable) -> list[Part]:
    if not needs_transactions(price):
        parts = [Part(f"{price.rate * 100:f}%".replace(".00%", "%"), usage.units, price.rate,
                      usage.units * price.rate)]
        if price.fixed_fee and usage.events:
            parts.append(Part("fixed fee per transaction", Decimal(usage.events), price.fixed_fee,
                              usage.events * price.fixed_fee))
        return parts

    base = ZERO
    clamp_delta = ZERO
    charged = charged_transactions(price, usage.transactions)
    for amount in charged:
        raw = amount * price.rate + price.fixed_fee
        fee = raw
        if price.min_per_transaction is not None:
            fee = max(fee, price.min_per_transaction)
        if price.max_per_transaction is not None:
            fee = min(fee, price.max_per_transaction)
        base += amount
        clamp_delta += fee - raw
    parts = [Part(f"{price.rate * 100:f}%", base, price.rate, base * price.rate)]
    if price.fixed_fee and charged:
        parts.append(Part("fixed fee per transaction", Decimal(len(charged)), price.fixed_fee,
                          len(charged) * price.fixed_fee))
    if clamp_delta:
        parts.append(Part("per-transaction min/max", Decimal(len(charged)), None, clamp_delta))
    return parts
