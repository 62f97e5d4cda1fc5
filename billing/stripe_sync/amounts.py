"""Our amounts (integer minor units of ``billing.money.minor_units``, ISO 4217) as Stripe API
amounts, which count the currency's smallest unit *as Stripe defines it*
(https://docs.stripe.com/currencies):

- zero-decimal in Stripe's API: BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF
  XOF XPF (an amount of 500 is ¥500);
- three-decimal: BHD JOD KWD OMR TND, where the amount charged must end in 0 (Stripe's
  payment partners settle to the nearest ten);
- ISK: zero-decimal in ISO 4217 but two-decimal in Stripe's API, whole krónur only
  (amount 100 is 1 króna): our 500 is Stripe's 50000;
- every other currency: two-decimal.

An amount that Stripe cannot represent exactly (a fraction of a zero-decimal currency's
unit, a three-decimal total not ending in 0) is refused with a reason, never rounded: the
invoice is reported as failed rather than billed at a different amount.
"""

from __future__ import annotations

from billing.money import minor_units

STRIPE_ZERO_DECIMAL = frozenset({"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND",
                                 "VUV", "XAF", "XOF", "XPF"})
STRIPE_THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
WHOLE_UNITS_ONLY = frozenset({"ISK"})  # two-decimal in the API, amounts in multiples of 100


class NotRepresentable(ValueError):
    """An amount Stripe cannot take exactly; the message says why."""


def stripe_decimals(currency: str) -> int:
    code = currency.upper()
    if code in STRIPE_ZERO_DECIMAL:
        return 0
    if code in STRIPE_THREE_DECIMAL:
        return 3
    return 2


def to_stripe(amount_minor: int, currency: str) -> int:
    """One amount (a line) in Stripe's units; NotRepresentable if it would change value."""
    code = currency.upper()
    shift = stripe_decimals(code) - minor_units(code)
    if shift >= 0:
        amount = amount_minor * 10 ** shift
    else:
        amount, rest = divmod(amount_minor, 10 ** -shift)
        if rest:
            raise NotRepresentable(f"{amount_minor} (1/{10 ** minor_units(code)} {code}) is not a whole number of "
                                   f"Stripe's {code} units")
    if code in WHOLE_UNITS_ONLY and amount % 100:
        raise NotRepresentable(f"Stripe takes {code} in whole units only; {amount_minor} is not")
    return amount


def total_to_stripe(amount_minor: int, currency: str) -> int:
    """An amount to be charged (an invoice total): also checks Stripe's rule for
    three-decimal currencies (the last digit is 0)."""
    amount = to_stripe(amount_minor, currency)
    if currency.upper() in STRIPE_THREE_DECIMAL and amount % 10:
        raise NotRepresentable(f"Stripe charges {currency.upper()} only in multiples of 10 (the last of three "
                               f"decimals must be 0); the total is {amount}")
    return amount


def try_to_stripe(amount_minor: int, currency: str) -> int | None:
    try:
        return to_stripe(amount_minor, currency)
    except NotRepresentable:
        return None
