"""The price kinds of one model: per-token rates, context-length tiers, service tiers, per-unit prices.

Pure: no database, HTTP or clock reads.

- ``Rates``: USD per 1M tokens for each token component (``TOKEN_RATES``): ``input``
  (non-cached input), ``output``, ``cache_read``, ``cache_write`` (5-minute cache writes),
  ``cache_write_1h`` (1-hour cache writes) and ``reasoning``. ``cache_read`` and
  ``cache_write`` default to ``input``, ``cache_write_1h`` to ``cache_write``, ``reasoning``
  to ``output``.
- ``ContextTier``: rates for a request whose *prompt* (``PROMPT_RATES``: input + cached
  input + cache writes, as Anthropic and Google count it) is over ``above`` tokens. The
  whole request (output too) is then priced at the tier's rates.
- ``RateCard``: standard rates plus their context tiers. A model's price is its standard
  card; ``service_tiers`` adds a card per service tier (``SERVICE_TIERS``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from billing.money import to_decimal

TOKEN_RATES = ("input", "output", "cache_read", "cache_write", "cache_write_1h", "reasoning")
PROMPT_RATES = ("input", "cache_read", "cache_write", "cache_write_1h")  # the tokens that form the prompt
# rate -> the rate it defaults to when a data file leaves it out
RATE_DEFAULTS = {"cache_read": "input", "cache_write": "input", "cache_write_1h": "cache_write", "reasoning": "output"}
ServiceTier = Literal["batch", "priority", "flex"]  # the tiers a price may have a card for
SERVICE_TIERS: tuple[str, ...] = get_args(ServiceTier)
STANDARD_TIER = "standard"
STANDARD_NAMES = frozenset({"standard", "default", "auto", ""})  # what providers call the standard tier


def fill_rate_defaults(data: Any) -> Any:
    """A rate mapping with its defaulted rates filled in (``RATE_DEFAULTS``, in dependency order)."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for key, fallback in RATE_DEFAULTS.items():
        if data.get(key) is None:
            # Placeholder when the fallback is missing or invalid: that field's error is enough.
            data[key] = data[fallback] if _is_price(data.get(fallback)) else Decimal(0)
    return data


def _is_price(value: Any) -> bool:
    try:
        price_decimal(value)
    except ValueError:
        return False
    return True


def price_decimal(value: Any) -> Decimal:
    """A price as an exact, non-negative Decimal (str/int/Decimal; never binary float arithmetic)."""
    try:
        number = to_decimal(value)
    except (ArithmeticError, TypeError):
        raise ValueError(f"not a finite number: {value!r}") from None
    if number < 0:
        raise ValueError("must not be negative")
    return number


class Rates(BaseModel):
    """USD per 1M tokens for each token component."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    reasoning: Decimal

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        return fill_rate_defaults(data)

    @field_validator(*TOKEN_RATES, mode="before")
    @classmethod
    def _decimal(cls, value: Any) -> Decimal:
        return price_decimal(value)

    def rates(self) -> dict[str, Decimal]:
        """The per-1M-token rates by component name (``TOKEN_RATES``)."""
        return {name: getattr(self, name) for name in TOKEN_RATES}


class ContextTier(Rates):
    """Rates for a whole request whose prompt is over ``above`` tokens."""

    above: int = Field(gt=0)


class RateCard(Rates):
    """Standard rates and the context tiers over them (thresholds distinct)."""

    context_tiers: tuple[ContextTier, ...] = ()

    @field_validator("context_tiers")
    @classmethod
    def _distinct(cls, tiers: tuple[ContextTier, ...]) -> tuple[ContextTier, ...]:
        thresholds = [t.above for t in tiers]
        if len(set(thresholds)) != len(thresholds):
            raise ValueError(f"two context tiers above the same prompt size: {sorted(thresholds)}")
        return tuple(sorted(tiers, key=lambda t: t.above))

    def for_prompt(self, prompt_tokens: Decimal | int) -> Rates:
        """The rates of a request with this many prompt tokens: the tier with the highest
        threshold below it, else the standard rates."""
        chosen: Rates = self
        for tier in self.context_tiers:  # ascending thresholds
            if prompt_tokens > tier.above:
                chosen = tier
        return chosen

    @property
    def prompt_limit(self) -> int | None:
        """The largest prompt the standard rates price (the lowest threshold), None without tiers."""
        return self.context_tiers[0].above if self.context_tiers else None

    def scaled(self, factor: Decimal) -> dict[str, Any]:
        """This card's fields with every rate multiplied by ``factor`` (exact)."""
        return {**{n: p * factor for n, p in self.rates().items()},
                "context_tiers": tuple(t.model_copy(update={n: p * factor for n, p in t.rates().items()})
                                       for t in self.context_tiers)}


def tier_name(value: Any) -> str:
    """An event's ``service_tier`` as a tier name: ``standard`` for the standard tier's names
    (``STANDARD_NAMES``: OpenAI's ``default``/``auto``, Anthropic's ``standard``), else lowercase."""
    name = str(value).strip().lower()
    return STANDARD_TIER if name in STANDARD_NAMES else name

