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
        cache_write: "3.75"              # default: input
        # reasoning: default output
        aliases: [claude-sonnet-4-5-20250929]
"""

from __future__ import annotations

import difflib
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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from billing.errors import BillingError, ErrorCode
from billing.events import UsageEvent
from billing.money import ONE, ZERO, dec_str, to_decimal

PER_TOKENS = 1_000_000  # prices are quoted per this many tokens
PRICE_FIELDS = ("input", "output", "cache_read", "cache_write", "reasoning")
# Entry keys a data file may set once at the top level for all its entries.
_INHERITED = ("provider", "source", "retrieved", "batch_discount")
_PRECISION = 60  # wide enough that products of prices and token counts are exact


class UnknownModel(BillingError):
    """No price for this model (or none in force at the given time)."""

    code = ErrorCode.UNKNOWN_MODEL


class CostBookError(BillingError):
    """A cost data file or a set of entries is invalid; the message lists every problem."""

    code = ErrorCode.VALIDATION


class ModelPrice(BaseModel):
    """One model's list price per 1M tokens, in force from ``effective_from`` (00:00 UTC).

    ``cache_read`` and ``cache_write`` default to ``input``; ``reasoning`` defaults to
    ``output``. After validation they are always set. ``batch_discount`` is the
    fraction taken off a batch call (0.5 = half price).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    effective_from: date
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    reasoning: Decimal
    batch_discount: Decimal = ZERO
    source: str = Field(min_length=1)
    retrieved: date
    aliases: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key, fallback in (("cache_read", "input"), ("cache_write", "input"), ("reasoning", "output")):
                if data.get(key) is None:
                    # Placeholder when the fallback is missing too: that field's error is enough.
                    data[key] = data[fallback] if data.get(fallback) is not None else ZERO
        return data

    @field_validator(*PRICE_FIELDS, "batch_discount", mode="before")
    @classmethod
    def _decimal(cls, value: Any) -> Decimal:
        try:
            number = to_decimal(value)  # str/int/Decimal exactly; never binary float arithmetic
        except (ArithmeticError, TypeError):
            raise ValueError(f"not a finite number: {value!r}") from None
        if number < 0:
            raise ValueError("must not be negative")
        return number

    @field_validator("batch_discount")
    @classmethod
    def _fraction(cls, value: Decimal) -> Decimal:
        if value > ONE:
            raise ValueError("must be a fraction between 0 and 1 (0.5 = 50% off)")
        return value

    @field_validator("effective_from", "retrieved", mode="before")
    @classmethod
    def _plain_date(cls, value: Any) -> Any:
        return value.date() if isinstance(value, datetime) else value

    def prices(self) -> dict[str, Decimal]:
        """The five per-1M-token prices by component name."""
        return {name: getattr(self, name) for name in PRICE_FIELDS}


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
            return CostBook(e.model_copy(update={n: p * k for n, p in e.prices().items()}) for e in self)

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


def _parse_yaml(text: str, origin: str) -> list[ModelPrice]:
    try:
        documents = [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]
    except (yaml.YAMLError, ArithmeticError) as exc:
        raise CostBookError(f"{origin}: not valid YAML: {exc}") from None
    entries: list[ModelPrice] = []
    problems: list[str] = []
    for doc in documents:
        if not isinstance(doc, dict) or not isinstance(doc.get("models"), list):
            problems.append(f"{origin}: expected a mapping with a 'models:' list")
            continue
        extra = set(doc) - {"models", *_INHERITED}
        if extra:
            problems.append(f"{origin}: unknown top-level keys {sorted(extra)}")
        shared = {k: doc[k] for k in _INHERITED if k in doc}
        for i, raw in enumerate(doc["models"]):
            where = f"{origin}: models[{i}]"
            if not isinstance(raw, dict):
                problems.append(f"{where}: expected a mapping")
                continue
            where = f"{origin}: models[{i}] ({raw.get('model', '?')})"
            try:
                entries.append(ModelPrice.model_validate({**shared, **raw}))
            except ValidationError as exc:
                problems.extend(f"{where}.{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}"
                                for e in exc.errors())
    if problems:
        raise CostBookError("; ".join(problems), details=problems)
    return entries


def _entry_dict(entry: ModelPrice, shared: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"model": entry.model, "effective_from": entry.effective_from}
    defaults = {"cache_read": entry.input, "cache_write": entry.input, "reasoning": entry.output}
    for name, price in entry.prices().items():
        if name not in defaults or price != defaults[name]:
            out[name] = dec_str(price)
    for key in ("batch_discount", "source", "retrieved"):
        if getattr(entry, key) != shared.get(key):
            value = getattr(entry, key)
            out[key] = dec_str(value) if isinstance(value, Decimal) else value
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


def cost_breakdown(event: UsageEvent, book: CostBook) -> dict[str, Decimal]:
    """Provider cost of one event per component (exact ``Decimal``, never rounded here).

    Token properties are **disjoint** counts, each billed at its own price:

    - ``input_tokens``: NON-cached input tokens (Anthropic's convention). For OpenAI send
      ``prompt_tokens - cached_tokens``; the cached part goes in ``cache_read_tokens``.
    - ``output_tokens`` at ``output``; ``reasoning_tokens`` at ``reasoning``. If your
      provider counts reasoning inside output (OpenAI), send only one of the two.
    - ``cache_read_tokens`` / ``cache_write_tokens`` at ``cache_read`` / ``cache_write``.

    Missing token fields count 0. With any tokens, the ``model`` property is looked up
    at the event's timestamp and each component is ``tokens * price / 1,000,000``, times
    ``(1 - batch_discount)`` when the ``batch`` property is true. Keys are the
    ``PRICE_FIELDS`` that have tokens; the values sum exactly to ``event_cost``.

    An explicit ``cost`` property (a provider cost the app reports itself, e.g. for a
    non-token API) is used as is: ``{"reported": cost}``. An event without tokens or
    ``cost`` (``request``, ``outcome``...) costs nothing: ``{}``.

    Raises ``UnknownModel`` for tokens without a known ``model`` price at that time.
    """
    props = event.properties
    if props.get("cost") is not None:
        reported = event.number("cost")
        if reported < 0:
            raise BillingError(f"event {event.id}: cost must not be negative, got {reported}",
                               code=ErrorCode.NEGATIVE_QUANTITY)
        return {"reported": reported}
    tokens: dict[str, Decimal] = {}
    for name in PRICE_FIELDS:
        count = event.number(f"{name}_tokens", ZERO)
        if count < 0:
            raise BillingError(f"event {event.id}: {name}_tokens must not be negative, got {count}",
                               code=ErrorCode.NEGATIVE_QUANTITY)
        if count:
            tokens[name] = count
    if not tokens:
        return {}
    model = props.get("model")
    if not model:
        raise UnknownModel(f"event {event.id} reports tokens but no 'model' property, so it cannot be "
                           "costed; add the model name (or send an explicit 'cost')",
                           details={"event": event.id})
    price = book.price_for(model, event.timestamp)
    keep = ONE - price.batch_discount if _is_true(props.get("batch")) else ONE
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return {name: count * getattr(price, name) / PER_TOKENS * keep for name, count in tokens.items()}


def event_cost(event: UsageEvent, book: CostBook) -> Decimal:
    """Provider cost of one event in the book's currency (USD), exact. See ``cost_breakdown``."""
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return sum(cost_breakdown(event, book).values(), ZERO)
