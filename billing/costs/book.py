"""The cost book: what each model costs *us* (the provider's list price), effective-dated.

Pure: no database, HTTP or clock reads. Time is always passed in.

Prices are per **1M tokens** as ``Decimal``. In YAML they are written as quoted
strings (``input: "3"``); the loader also reads an unquoted number from its text,
never through a binary float.

Data-file format (one file per provider, several YAML documents allowed)::

    provider: anthropic                  # inherited by every entry below
    source: https://...pricing           # inherited unless an entry sets its own
    retrieved: 2026-11-01                # inherited unless an entry sets its own
    batch_discount: "0.5"                # optional, inherited
    models:
      - model: claude-sonnet-4-5
        effective_from: 2025-09-29       # in force from 00:00 UTC of this date
        input: "3"                       # NON-cached input tokens
        output: "15"
        cache_read: "0.30"               # default: input
        cache_write: "3.75"              # 5-minute cache writes; default: input
        cache_write_1h: "6"              # default: cache_write
        # reasoning: default output
        context_tiers:                   # a prompt over `above` tokens: the whole request at these rates
          - {above: 200000, input: "6", output: "22.50", cache_read: "0.60", cache_write: "7.50", cache_write_1h: "12"}
        service_tiers:                   # batch / priority / flex: rates (+ context_tiers) per tier
          priority: {input: "5", output: "25", cache_read: "0.50"}
        per_unit: {web_search_requests: "0.01"}   # USD per unit of an event property
        aliases: [claude-sonnet-4-5-20250929]

Problems are reported all at once as ``file:line: path: message``.
"""

from __future__ import annotations

import difflib
import re
import functools
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal, localcontext
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from billing.errors import BillingError, ErrorCode
from billing.events import UsageEvent
from billing.catalog.loader import _line_of
from billing.costs.rates import (PROMPT_RATES, RATE_DEFAULTS, STANDARD_TIER, RateCard, Rates, ServiceTier,
                                  price_decimal, tier_name)
from billing.money import ONE, ZERO, dec_str, to_decimal

PER_TOKENS = 1_000_000  # prices are quoted per this many tokens
PRICE_FIELDS = ("input", "output", "cache_read", "cache_write", "reasoning")  # the stored columns
# event property -> the token rate that prices it (cache_write_tokens: its 5-minute part, see token_counts)
TOKEN_PROPERTIES = {"input_tokens": "input", "output_tokens": "output", "cache_read_tokens": "cache_read",
                    "cache_write_tokens": "cache_write", "cache_write_1h_tokens": "cache_write_1h",
                    "reasoning_tokens": "reasoning"}
_PROPERTY_NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")
# Entry keys a data file may set once at the top level for all its entries.
_INHERITED = ("provider", "source", "retrieved", "batch_discount")
_PRECISION = 60  # wide enough that products of prices and token counts are exact


class UnknownModel(BillingError):
    """No price for this model (or none in force at the given time)."""

    code = ErrorCode.UNKNOWN_MODEL


class CostBookError(BillingError):
    """A cost data file or a set of entries is invalid; the message lists every problem."""

    code = ErrorCode.VALIDATION


class UnknownServiceTier(UnknownModel):
    """The model has no rates for the event's service tier (the event stays unpriced until it has)."""


class ModelPrice(RateCard):
    """One model's list price, in force from ``effective_from`` (00:00 UTC).

    The standard rates per 1M tokens and their context tiers (``RateCard``); a card per
    service tier (``service_tiers``: batch, priority, flex); ``batch_discount``, the fraction
    taken off the standard card for a batch call when no batch card is given (0.5 = half
    price); ``per_unit``: USD per unit of an event property (``web_search_requests``: per
    call, ``images``, ``audio_seconds``...), the same in every tier.
    """

    model: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    effective_from: date
    batch_discount: Decimal = ZERO
    service_tiers: dict[ServiceTier, RateCard] = Field(default_factory=dict)
    per_unit: dict[str, Decimal] = Field(default_factory=dict)
    source: str = Field(min_length=1)
    retrieved: date
    aliases: tuple[str, ...] = ()

    @field_validator("batch_discount", mode="before")
    @classmethod
    def _discount(cls, value: Any) -> Decimal:
        number = price_decimal(value)
        if number > ONE:
            raise ValueError("must be a fraction between 0 and 1 (0.5 = 50% off)")
        return number

    @field_validator("per_unit", mode="before")
    @classmethod
    def _unit_prices(cls, prices: Any) -> Any:
        if not isinstance(prices, dict):
            return prices
        problems = [f"{name!r} is not a property name (lowercase letters, digits, _)" for name in prices
                    if not isinstance(name, str) or not _PROPERTY_NAME.fullmatch(name)]
        problems += [f"{name!r} is a token count (priced per 1M tokens by the rates)" for name in prices
                     if isinstance(name, str) and name.endswith("_tokens")]
        if problems:
            raise ValueError("per_unit keys are the event properties priced per unit: " + "; ".join(problems))
        return {name: price_decimal(value) for name, value in prices.items()}

    @field_validator("effective_from", "retrieved", mode="before")
    @classmethod
    def _plain_date(cls, value: Any) -> Any:
        return value.date() if isinstance(value, datetime) else value

    def prices(self) -> dict[str, Decimal]:
        """The five base per-1M-token prices stored in their own columns (``PRICE_FIELDS``)."""
        return {name: getattr(self, name) for name in PRICE_FIELDS}

    def scaled_by(self, factor: Decimal) -> ModelPrice:
        """This price with every rate and unit price multiplied by ``factor`` (exact; the
        caller sets the precision)."""
        return self.model_copy(update={
            **self.scaled(factor),
            "service_tiers": {n: c.model_copy(update=c.scaled(factor)) for n, c in self.service_tiers.items()},
            "per_unit": {n: p * factor for n, p in self.per_unit.items()}})

    def card(self, tier: str) -> tuple[RateCard, Decimal]:
        """(the rate card, the factor on it) of a service tier (``rates.tier_name``).

        ``standard``: the standard card. A tier with its own card: that card. ``batch``
        without one: the standard card times ``1 - batch_discount``. Any other tier raises
        ``UnknownServiceTier`` (the event is kept unpriced, never priced at another tier's rates).
        """
        if tier == STANDARD_TIER:
            return self, ONE
        if tier in self.service_tiers:
            return self.service_tiers[tier], ONE
        if tier == "batch":
            return self, ONE - self.batch_discount
        raise UnknownServiceTier(
            f"no {tier!r} service tier rates for model {self.model!r} (in force from {self.effective_from}) "
            f"in the cost book; it has: {', '.join([STANDARD_TIER, 'batch', *sorted(set(self.service_tiers) - {'batch'})])}",
            details={"model": self.model, "service_tier": tier})


def _as_of(at: datetime | date) -> date:
    """The UTC calendar date of an instant (a plain date is taken as is)."""
    if isinstance(at, datetime):
        if at.tzinfo is None or at.utcoffset() is None:
            raise CostBookError(f"price lookup time must be timezone-aware, got {at.isoformat()}")
        return at.astimezone(UTC).date()
    return at


class CostBook:
    """Many ``ModelPrice`` entries, several per model allowed (one per effective date)."""

    def __init__(self, entries: Iterable[ModelPrice] = ()):
        by_model: dict[str, list[ModelPrice]] = {}
        problems: list[str] = []
        for entry in entries:
            versions = by_model.setdefault(entry.model, [])
            if any(v.effective_from == entry.effective_from for v in versions):
                problems.append(f"{entry.model}: two prices effective from {entry.effective_from}")
            versions.append(entry)
        aliases: dict[str, str] = {}
        for model, versions in by_model.items():
            for alias in {a for v in versions for a in v.aliases if a != model}:
                if alias in by_model:
                    problems.append(f"alias {alias!r} of {model} is also a model name")
                elif aliases.setdefault(alias, model) != model:
                    problems.append(f"alias {alias!r} claimed by both {aliases[alias]} and {model}")
        if problems:
            raise CostBookError("invalid cost book: " + "; ".join(sorted(problems)), details=sorted(problems))
        self._versions = {m: tuple(sorted(v, key=lambda e: e.effective_from)) for m, v in by_model.items()}
        self._dates = {m: [v.effective_from for v in vs] for m, vs in self._versions.items()}
        self._aliases = aliases
        self.unit_properties = frozenset(p for vs in self._versions.values() for v in vs for p in v.per_unit)

    # -- lookup ---------------------------------------------------------------------------

    def resolve(self, model: str) -> str | None:
        """The canonical model name for a model name or alias, or None if unknown."""
        if model in self._versions:
            return model
        return self._aliases.get(model)

    def knows(self, model: str) -> bool:
        """True if the model (or alias) has at least one price, at any date."""
        return self.resolve(model) is not None

    def models(self) -> list[str]:
        """Canonical model names, sorted."""
        return sorted(self._versions)

    def versions(self, model: str) -> tuple[ModelPrice, ...]:
        """All prices of a model (or alias), oldest first; empty if unknown."""
        name = self.resolve(model)
        return self._versions[name] if name else ()

    def price_for(self, model: str, at: datetime | date) -> ModelPrice:
        """The price in force for ``model`` at instant ``at`` (latest ``effective_from <= at``).

        Raises ``UnknownModel`` if the model is unknown or has no price yet at that time.
        """
        name = self.resolve(model) if isinstance(model, str) else None
        if name is None:
            hint = difflib.get_close_matches(str(model), [*self._versions, *self._aliases], n=3)
            suggestion = f" (did you mean {', '.join(hint)}?)" if hint else ""
            raise UnknownModel(f"no price for model {model!r} in the cost book{suggestion}",
                               details={"model": model})
        day = _as_of(at)
        index = bisect_right(self._dates[name], day)
        if index == 0:
            first = self._dates[name][0]
            raise UnknownModel(f"no price for model {model!r} in force on {day} (first price from {first})",
                               details={"model": model, "at": day.isoformat(), "first": first.isoformat()})
        return self._versions[name][index - 1]

    # -- whole-book operations ------------------------------------------------------------

    @property
    def entries(self) -> tuple[ModelPrice, ...]:
        """Every entry, ordered by model then effective date."""
        return tuple(e for m in self.models() for e in self._versions[m])

    def __iter__(self) -> Iterator[ModelPrice]:
        return iter(self.entries)

    def __len__(self) -> int:
        return sum(len(v) for v in self._versions.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CostBook) and self.entries == other.entries

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CostBook({len(self._versions)} models, {len(self)} prices)"

    def merged(self, other: CostBook) -> CostBook:
        """A new book with ``other``'s entries added; ``other`` wins on conflicts.

        An entry of ``other`` whose alias is one of our model names prices that model (an
        imported ``gemini/gemini-2.5-pro`` aliased ``gemini-2.5-pro`` becomes a new version
        of our ``gemini-2.5-pro``, its own name kept as an alias). Then: same model and
        effective date, ``other``'s entry replaces ours; an alias of ours that ``other`` uses
        as a model name or alias is dropped from our entries.
        """
        incoming: list[ModelPrice] = []
        for entry in other:
            ours = [a for a in entry.aliases if a in self._versions] if entry.model not in self._versions else []
            if len(ours) == 1:
                rest = tuple(a for a in (*entry.aliases, entry.model) if a != ours[0])
                entry = entry.model_copy(update={"model": ours[0], "aliases": rest})
            incoming.append(entry)
        other = CostBook(incoming)
        taken = set(other._versions) | set(other._aliases)
        keep = [
            e.model_copy(update={"aliases": tuple(a for a in e.aliases if a not in taken)})
            for e in self
            if not any(o.effective_from == e.effective_from for o in other._versions.get(e.model, ()))
        ]
        return CostBook([*keep, *other])

    def scaled(self, factor: Decimal | int | str) -> CostBook:
        """A new book with every price multiplied by ``factor`` exactly (what-if simulations)."""
        k = to_decimal(factor)
        if k < 0:
            raise CostBookError(f"scale factor must not be negative, got {k}")
        with localcontext() as ctx:
            ctx.prec = _PRECISION
            return CostBook(e.scaled_by(k) for e in self)

    # -- loading --------------------------------------------------------------------------

    @classmethod
    def from_yaml_text(cls, text: str, *, origin: str = "<text>") -> CostBook:
        """Parse data-file YAML (one or more documents). Reports all problems at once."""
        return cls(_parse_yaml(text, origin))

    @classmethod
    def from_files(cls, paths: Iterable[str | PathLike[str]]) -> CostBook:
        """Load and combine data files; a model/date defined twice is an error."""
        entries: list[ModelPrice] = []
        for path in paths:
            entries.extend(_parse_yaml(Path(path).read_text(encoding="utf-8"), str(path)))
        return cls(entries)

    @classmethod
    def load_default(cls) -> CostBook:
        """The shipped book (all ``billing/costs/data/*.yaml``), loaded once and cached."""
        return _default_book()


@functools.cache
def _default_book() -> CostBook:
    data = resources.files("billing.costs").joinpath("data")
    entries: list[ModelPrice] = []
    for item in sorted(data.iterdir(), key=lambda t: t.name):
        if item.name.endswith((".yaml", ".yml")):
            entries.extend(_parse_yaml(item.read_text(encoding="utf-8"), item.name))
    return CostBook(entries)


# -- YAML in and out --------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that turns unquoted YAML floats into Decimal from their text."""


_Loader.add_constructor(
    "tag:yaml.org,2002:float",
    lambda loader, node: Decimal(loader.construct_scalar(node).replace("_", "")),
)


def _documents(text: str, origin: str) -> list[tuple[yaml.Node, Any]]:
    """The (node, value) of each non-empty YAML document (the node gives problems their lines)."""
    loader = _Loader(text)
    try:
        out = []
        while loader.check_node():
            node = loader.get_node()
            value = loader.construct_document(node)
            if value is not None:
                out.append((node, value))
        return out
    except (yaml.YAMLError, ArithmeticError) as exc:
        raise CostBookError(f"{origin}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def _path_text(parts: Iterable[Any]) -> str:
    """``models[3].context_tiers[0].input`` from ``["models", 3, "context_tiers", 0, "input"]``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _problem(origin: str, node: yaml.Node, parts: list[Any], message: str) -> str:
    """``file:line: path: message`` (the collect-all format of plan files)."""
    return f"{origin}:{_line_of(node, parts) or 1}: {_path_text(parts) or '(document)'}: {message}"


def _parse_yaml(text: str, origin: str) -> list[ModelPrice]:
    """Every entry of a data file; ``CostBookError`` listing every problem (``file:line: path: message``)."""
    entries: list[ModelPrice] = []
    problems: list[str] = []
    for node, doc in _documents(text, origin):
        if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
            problems.append(_problem(origin, node, [], "expected a mapping with a 'models:' list"))
            continue
        problems.extend(_problem(origin, node, [key], f"unknown top-level key (known: models, {', '.join(_INHERITED)})")
                        for key in sorted(set(doc) - {"models", *_INHERITED}, key=str))
        shared = {k: doc[k] for k in _INHERITED if k in doc}
        for i, raw in enumerate(doc["models"]):
            if not isinstance(raw, dict):
                problems.append(_problem(origin, node, ["models", i], "expected a mapping"))
                continue
            try:
                entries.append(ModelPrice.model_validate({**shared, **raw}))
            except ValidationError as exc:
                problems.extend(_problem(origin, node, ["models", i, *_field_path(e["loc"])],
                                         f"{e['msg'].removeprefix('Value error, ')} ({raw.get('model', '?')})") for e in exc.errors())
    if problems:
        raise CostBookError("\n".join(problems), details=problems)
    return entries


def _field_path(loc: tuple[Any, ...]) -> list[Any]:
    """A pydantic error location without the parts that name no data key (``function-after[...]``)."""
    return [part for part in loc if not (isinstance(part, str) and "[" in part)]


def _rates_dict(card: Rates) -> dict[str, str]:
    """The rates a data file must write: the ones that differ from their default."""
    values = card.rates()
    out: dict[str, str] = {}
    for name, price in values.items():
        fallback = RATE_DEFAULTS.get(name)
        if fallback is None or price != values[fallback]:
            out[name] = dec_str(price)
    return out


def _card_dict(card: RateCard) -> dict[str, Any]:
    out: dict[str, Any] = _rates_dict(card)
    if card.context_tiers:
        out["context_tiers"] = [{"above": t.above, **_rates_dict(t)} for t in card.context_tiers]
    return out


def extra_fields(entry: ModelPrice) -> dict[str, Any]:
    """The parts of an entry beyond its base columns, in data-file form (``{}`` if none):
    ``cache_write_1h`` when not defaulted, ``context_tiers``, ``service_tiers``, ``per_unit``."""
    out: dict[str, Any] = {}
    if entry.cache_write_1h != entry.cache_write:
        out["cache_write_1h"] = dec_str(entry.cache_write_1h)
    if entry.context_tiers:
        out["context_tiers"] = _card_dict(entry)["context_tiers"]
    if entry.service_tiers:
        out["service_tiers"] = {name: _card_dict(card) for name, card in sorted(entry.service_tiers.items())}
    if entry.per_unit:
        out["per_unit"] = {name: dec_str(price) for name, price in sorted(entry.per_unit.items())}
    return out


def _entry_dict(entry: ModelPrice, shared: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"model": entry.model, "effective_from": entry.effective_from}
    out.update({k: v for k, v in _rates_dict(entry).items() if k in PRICE_FIELDS})
    for key in ("batch_discount", "source", "retrieved"):
        if getattr(entry, key) != shared.get(key):
            value = getattr(entry, key)
            out[key] = dec_str(value) if isinstance(value, Decimal) else value
    out.update(extra_fields(entry))
    if entry.aliases:
        out["aliases"] = list(entry.aliases)
    return out


def dump_yaml(book: CostBook) -> str:
    """The book in the data-file format: one YAML document per provider, prices as quoted strings.

    ``CostBook.from_yaml_text(dump_yaml(book)) == book``.
    """
    by_provider: dict[str, list[ModelPrice]] = {}
    for entry in book:
        by_provider.setdefault(entry.provider, []).append(entry)
    documents = []
    for provider in sorted(by_provider):
        group = by_provider[provider]
        shared: dict[str, Any] = {"provider": provider}
        for key in ("source", "retrieved", "batch_discount"):
            shared[key] = Counter(getattr(e, key) for e in group).most_common(1)[0][0]
        header = {k: dec_str(v) if isinstance(v, Decimal) else v for k, v in shared.items()}
        documents.append({**header, "models": [_entry_dict(e, shared) for e in group]})
    return yaml.dump_all(documents, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=120)


class _PlainDumper(yaml.SafeDumper):
    """SafeDumper that writes a repeated value (a shared date) again, never as &id001 / *id001."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


# -- the cost of one event --------------------------------------------------------------------


def _is_true(value: Any) -> bool:
    """A property flag: True, a non-zero number, or "true"/"yes"/"1" (so "false" is false)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1")
    return bool(value)


def token_counts(event: UsageEvent) -> dict[str, Decimal]:
    """The event's token counts by the rate that prices them (``TOKEN_PROPERTIES``), zeros left out.

    ``cache_write_1h_tokens`` is the part of ``cache_write_tokens`` written for 1 hour (as the
    client records Anthropic's ``cache_creation``): the rest of ``cache_write_tokens`` is
    priced at ``cache_write``, that part at ``cache_write_1h``. A count that is negative, or a
    1-hour part larger than ``cache_write_tokens``, is an error.
    """
    counts: dict[str, Decimal] = {}
    for prop, rate in TOKEN_PROPERTIES.items():
        count = event.number(prop, ZERO)
        if count < 0:
            raise BillingError(f"event {event.id}: {prop} must not be negative, got {count}",
                               code=ErrorCode.NEGATIVE_QUANTITY)
        counts[rate] = count
    counts["cache_write"] -= counts["cache_write_1h"]
    if counts["cache_write"] < 0:
        raise BillingError(f"event {event.id}: cache_write_1h_tokens ({counts['cache_write_1h']}) is the part of "
                           "cache_write_tokens written for 1 hour and cannot exceed it "
                           f"({counts['cache_write'] + counts['cache_write_1h']})", code=ErrorCode.EVENT_INVALID)
    return {rate: count for rate, count in counts.items() if count}


def prompt_tokens(counts: dict[str, Decimal]) -> Decimal:
    """The request's prompt size that selects a context tier: input + cached input + cache writes."""
    return sum((counts.get(rate, ZERO) for rate in PROMPT_RATES), ZERO)


def _unit_counts(event: UsageEvent, price: ModelPrice) -> dict[str, Decimal]:
    counts: dict[str, Decimal] = {}
    for prop in price.per_unit:
        try:
            count = event.number(prop, ZERO)
        except (ArithmeticError, TypeError, ValueError):
            raise BillingError(f"event {event.id}: {prop} must be a number, got {event.properties[prop]!r}",
                               code=ErrorCode.EVENT_INVALID) from None
        if count < 0:
            raise BillingError(f"event {event.id}: {prop} must not be negative, got {count}",
                               code=ErrorCode.NEGATIVE_QUANTITY)
        if count:
            counts[prop] = count
    return counts


def event_tier(properties: dict[str, Any]) -> str:
    """The service tier an event asks for: its ``service_tier`` property (``rates.tier_name``)
    when set, else ``batch`` when its ``batch`` flag is true, else ``standard``."""
    tier = properties.get("service_tier")
    if tier is not None:
        return tier_name(tier)
    return "batch" if _is_true(properties.get("batch")) else STANDARD_TIER


def cost_breakdown(event: UsageEvent, book: CostBook) -> dict[str, Decimal]:
    """Provider cost of one event per component (exact ``Decimal``, never rounded here).

    THE rule that costs an event; ingestion (and its fast copy in ``billing.ledger.prepare``,
    held equal by a test), quotas, re-costing and simulations all come here.

    Token properties are **disjoint** counts (``token_counts``), each billed at its own
    rate: ``input_tokens`` (non-cached), ``output_tokens``, ``cache_read_tokens``,
    ``cache_write_tokens`` (5-minute; its ``cache_write_1h_tokens`` part at the 1-hour
    rate), ``reasoning_tokens``. Missing counts are 0.

    With any tokens (or a unit the model prices per unit), the ``model`` property is looked
    up at the event's timestamp; the ``service_tier`` (or ``batch``) property selects the
    rate card (``ModelPrice.card``), and the prompt size (``prompt_tokens``) its context
    tier, whose rates price the whole request. Each token component is
    ``tokens * rate / 1,000,000 * factor``; each per-unit property of the model
    (``per_unit``) is ``count * price``. Keys are the rate names and unit property names
    with a count; the values sum exactly to ``event_cost``.

    An explicit ``cost`` property (a provider cost the app reports itself) is used as is:
    ``{"reported": cost}``. An event without tokens or ``cost`` costs nothing: ``{}``.

    Raises ``UnknownModel`` for tokens without a known ``model`` price at that time, and
    ``UnknownServiceTier`` (an ``UnknownModel``) for a tier the model has no rates for.
    """
    props = event.properties
    if props.get("cost") is not None:
        reported = event.number("cost")
        if reported < 0:
            raise BillingError(f"event {event.id}: cost must not be negative, got {reported}",
                               code=ErrorCode.NEGATIVE_QUANTITY)
        return {"reported": reported}
    tokens = token_counts(event)
    model = props.get("model")
    if not model:
        if tokens:
            raise UnknownModel(f"event {event.id} reports tokens but no 'model' property, so it cannot be "
                               "costed; add the model name (or send an explicit 'cost')",
                               details={"event": event.id})
        return {}
    if not tokens and not (book.unit_properties & props.keys()):
        return {}
    price = book.price_for(model, event.timestamp)
    card, factor = price.card(event_tier(props))
    rates = card.for_prompt(prompt_tokens(tokens))
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        cost = {rate: count * getattr(rates, rate) / PER_TOKENS * factor for rate, count in tokens.items()}
        cost.update({prop: count * price.per_unit[prop] for prop, count in _unit_counts(event, price).items()})
        return cost


def event_cost(event: UsageEvent, book: CostBook) -> Decimal:
    """Provider cost of one event in the book's currency (USD), exact. See ``cost_breakdown``."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return sum(cost_breakdown(event, book).values(), ZERO)
