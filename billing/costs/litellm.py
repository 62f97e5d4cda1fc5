"""Import LiteLLM's ``model_prices_and_context_window.json`` into a ``CostBook``.

LiteLLM quotes prices per token (``3e-06``); the cost book quotes per 1M tokens. The
JSON is parsed with ``parse_float=Decimal`` and shifted by 10^6 exactly, so ``3e-06``
becomes ``3`` and ``1.5e-07`` becomes ``0.15`` with no binary-float error.

Pure: the caller reads the file (or passes its text or a path) and chooses the dates.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from collections.abc import Iterable

from pydantic import ValidationError

from billing.costs.book import CostBook, ModelPrice, dump_yaml
from billing.costs.rates import PROMPT_RATES, STANDARD_TIER, TOKEN_RATES
from billing.money import ONE, ZERO, to_decimal

__all__ = ["ImportResult", "import_litellm", "dump_yaml"]

DEFAULT_SOURCE = "LiteLLM model_prices_and_context_window.json"
TEXT_MODES = frozenset({"chat", "completion", "responses"})  # plus a missing mode
# cost-book rate <- LiteLLM per-token key; each may carry a context threshold
# (``_above_200k_tokens``) and a service tier (``_batches``, ``_priority``, ``_flex``)
_RATE_KEYS = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cache_read",
    "cache_creation_input_token_cost": "cache_write",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h",
    "output_cost_per_reasoning_token": "reasoning",
}
_RATE_KEY = re.compile(r"(?P<base>" + "|".join(sorted(map(re.escape, _RATE_KEYS), key=len, reverse=True))
                       + r")(?:_above_(?P<k>\d+)k_tokens)?(?:_(?P<tier>batches|priority|flex))?")
_TIERS = {None: STANDARD_TIER, "batches": "batch", "priority": "priority", "flex": "flex"}
# per-unit price (event property) <- LiteLLM key, and the units it quotes per
_UNIT_KEYS = {
    "input_cost_per_image": ("input_images", 1),
    "output_cost_per_image": ("output_images", 1),
    "input_cost_per_audio_per_second": ("input_audio_seconds", 1),
    "output_cost_per_second": ("output_seconds", 1),
    "code_interpreter_cost_per_session": ("code_interpreter_sessions", 1),
    "file_search_cost_per_1k_calls": ("file_search_calls", 1000),
}
_SEARCH_KEY = "search_context_cost_per_query"  # {search_context_size_low/medium/high: USD per call}
_SEARCH_SIZE = "search_context_size_medium"
WEB_SEARCH_PROPERTY = "web_search_requests"  # the client's count of web search calls


@dataclass(frozen=True)
class ImportResult:
    """The imported book, the keys skipped (key -> reason), notes on kept entries, and the
    price fields of kept entries the import did not map (field -> the keys that have it)."""

    book: CostBook
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    unmapped: dict[str, list[str]] = field(default_factory=dict)


def _load(data: dict[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(data, dict):
        return data
    text = data.read_text(encoding="utf-8") if isinstance(data, Path) else data
    if isinstance(data, str) and not text.lstrip().startswith("{"):
        text = Path(data).read_text(encoding="utf-8")  # a str that is not JSON is a path
    loaded = json.loads(text, parse_float=Decimal)
    if not isinstance(loaded, dict):
        raise ValueError("LiteLLM price map must be a JSON object keyed by model name")
    return loaded


def _per_million(value: Any) -> Decimal:
    """Per-token price -> per-1M-token price, exactly."""
    return to_decimal(value).scaleb(6)


def _is_price_field(key: str) -> bool:
    """A LiteLLM field that states a price (the ones the import must map or report)."""
    return "cost" in key or "multiplier" in key or key == "search_free_requests"


# tier -> context threshold (None: the base rates) -> rate -> USD per 1M tokens
Grid = dict[str, dict[int | None, dict[str, Decimal]]]


def _rate_grid(spec: dict[str, Any]) -> tuple[Grid, set[str]]:
    """The per-token prices of an entry by tier, threshold and rate, and the keys read."""
    grid: Grid = {}
    read: set[str] = set()
    for key, value in spec.items():
        match = _RATE_KEY.fullmatch(key)
        if match is None or value is None:
            continue
        threshold = int(match["k"]) * 1000 if match["k"] else None
        grid.setdefault(_TIERS[match["tier"]], {}).setdefault(threshold, {})[_RATE_KEYS[match["base"]]] = \
            _per_million(value)
        read.add(key)
    return grid, read


def _filled(rates: dict[str, Decimal], standard: dict[str, Decimal],
            names: Iterable[str]) -> tuple[dict[str, Decimal], list[str]]:
    """A tier's rates with those of ``names`` LiteLLM leaves out taken as the standard rate
    times the tier's ratio (its input, else output, over the standard one); the names filled in."""
    for anchor in ("input", "output"):
        if rates.get(anchor) is not None and standard.get(anchor):
            ratio = rates[anchor] / standard[anchor]
            missing = [r for r in names if r in standard and r not in rates]
            return {**rates, **{r: standard[r] * ratio for r in missing}}, missing
    return rates, []


def _card(levels: dict[int | None, dict[str, Decimal]], standard: dict[int | None, dict[str, Decimal]] | None,
          notes: list[str], tier: str) -> dict[str, Any]:
    """RateCard fields of a tier from its grid levels. Gaps filled in by ``_filled``: a
    service tier's from the standard card (every rate), a context tier's cache rates from
    its card's base rates (cache prices follow the input price)."""
    card: dict[str, Any] = {}
    tiers = []
    for threshold, rates in sorted(levels.items(), key=lambda kv: kv[0] or 0):
        missing: list[str] = []
        if standard is not None:
            rates, missing = _filled(rates, standard.get(threshold) or standard[None], TOKEN_RATES)
        elif threshold is not None:
            rates, missing = _filled(rates, levels.get(None, {}), PROMPT_RATES)
            if missing:
                where = f" above {threshold // 1000}k tokens" if threshold else ""
                notes.append(f"{tier}{where}: {', '.join(missing)} not given, taken at the base rate times the "
                             "tier's input ratio")
        if threshold is None:
            card.update(rates)
        else:
            tiers.append({"above": threshold, **rates})
    card["context_tiers"] = tiers
    if standard is not None:
        left_out = sorted(t // 1000 for t in standard if t is not None and t not in levels)
        if left_out:
            notes.append(f"{tier}: no prices above {', '.join(f'{k}k' for k in left_out)} tokens; "
                         "its base rates price every prompt size")
    return card


def _uniform_ratio(levels: dict[int | None, dict[str, Decimal]], standard: Grid) -> Decimal | None:
    """The one ratio of every given batch rate to its standard rate, if there is one."""
    ratios = {rate / standard[STANDARD_TIER][t][name]
              for t, rates in levels.items() for name, rate in rates.items()
              if standard[STANDARD_TIER].get(t, {}).get(name)}
    covered = all(name in standard[STANDARD_TIER].get(t, {}) for t, rates in levels.items() for name in rates)
    return ratios.pop() if len(ratios) == 1 and covered else None


def _tiers(grid: Grid, notes: list[str]) -> dict[str, Any]:
    """ModelPrice fields of the rates: the standard card, ``batch_discount`` (a uniform batch
    ratio) or a batch card, and the priority and flex cards."""
    fields = _card(grid[STANDARD_TIER], None, notes, STANDARD_TIER)
    fields["batch_discount"] = ZERO
    service: dict[str, Any] = {}
    for tier, levels in grid.items():
        if tier == STANDARD_TIER:
            continue
        ratio = _uniform_ratio(levels, grid) if tier == "batch" else None
        if ratio is not None and ratio <= ONE:
            fields["batch_discount"] = ONE - ratio
        elif ratio is not None:
            notes.append(f"batch prices are {ratio} times the standard ones (dearer): ignored")
        else:
            service[tier] = _card(levels, grid[STANDARD_TIER], notes, tier)
    fields["service_tiers"] = service
    return fields


def _unit_prices(spec: dict[str, Any], notes: list[str]) -> tuple[dict[str, Decimal], set[str]]:
    """Per-unit prices (event property -> USD per unit) and the keys read."""
    prices: dict[str, Decimal] = {}
    read: set[str] = set()
    for key, (prop, per) in _UNIT_KEYS.items():
        if spec.get(key) is not None:
            prices[prop] = to_decimal(spec[key]) / per
            read.add(key)
    sizes = spec.get(_SEARCH_KEY)
    if isinstance(sizes, dict) and sizes.get(_SEARCH_SIZE) is not None:
        prices[WEB_SEARCH_PROPERTY] = to_decimal(sizes[_SEARCH_SIZE])
        read.add(_SEARCH_KEY)
        if len({to_decimal(v) for v in sizes.values() if v is not None}) > 1:
            notes.append(f"web search priced at the medium search context size ({prices[WEB_SEARCH_PROPERTY]} per call)")
    return prices, read


def _entry(key: str, spec: Any, providers: set[str] | None) -> tuple[dict[str, Any], list[str], set[str]] | str:
    """(the ModelPrice fields of one LiteLLM entry, notes, the price fields not mapped), or the reason to skip it."""
    if not isinstance(spec, dict):
        return "not an object"
    mode = spec.get("mode")
    if mode is not None and mode not in TEXT_MODES:
        return f"mode {mode!r} is not a text-generation mode"
    provider = spec.get("litellm_provider")
    if not provider:
        return "no litellm_provider"
    if providers is not None and provider not in providers:
        return f"provider {provider!r} not selected"
    if spec.get("input_cost_per_token") is None or spec.get("output_cost_per_token") is None:
        return "no input_cost_per_token/output_cost_per_token"
    notes: list[str] = []
    try:
        grid, read = _rate_grid(spec)
        per_unit, units_read = _unit_prices(spec, notes)
        fields: dict[str, Any] = {"model": key, "provider": provider, **_tiers(grid, notes), "per_unit": per_unit}
    except (ArithmeticError, TypeError, ValueError):
        return "a price is not a number"
    if isinstance(spec.get("source"), str) and spec["source"].strip():
        fields["source"] = spec["source"].strip()
    unmapped = {k for k in spec if _is_price_field(k) and spec[k] is not None} - read - units_read
    return fields, notes, unmapped


def import_litellm(
    data: dict[str, Any] | str | Path,
    *,
    effective_from: date,
    retrieved: date | None = None,
    providers: set[str] | None = None,
) -> ImportResult:
    """Convert a LiteLLM price map (dict, JSON text, or path) into a ``CostBook``.

    Every entry gets ``effective_from`` (LiteLLM carries no dates) and ``retrieved``
    (default: ``effective_from``). Kept: modes chat/completion/responses or no mode,
    with both input and output per-token costs, from ``providers`` if given. Everything
    else, including ``sample_spec``, is listed in ``ImportResult.skipped`` with a reason.
    Per-token keys map to rates (``_RATE_KEYS``: ``cache_creation_input_token_cost_above_1hr``
    is ``cache_write_1h``), each with an optional context threshold (``..._above_200k_tokens``
    -> a context tier above 200,000 prompt tokens) and service tier (``_batches``,
    ``_priority``, ``_flex``). Batch prices that are one fraction of the standard ones set
    ``batch_discount`` (a dearer one is ignored and noted); other batch prices, and
    priority and flex prices, become service tier cards, a rate they leave out taken at the
    standard rate times the tier's ratio (noted). Per-unit prices: ``search_context_cost_per_query``
    (medium size) prices ``web_search_requests``, and ``_UNIT_KEYS``. Every other price
    field of a kept entry is listed in ``ImportResult.unmapped``. A key prefixed by its own provider (``gemini/gemini-2.5-pro``) also answers to the bare
    name (``gemini-2.5-pro``) when no other entry has it.
    """
    raw = _load(data)
    kept: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    notes: dict[str, str] = {}
    unmapped: dict[str, list[str]] = {}
    for key, spec in raw.items():
        if key == "sample_spec":
            skipped[key] = "LiteLLM's documentation entry, not a model"
            continue
        read = _entry(key, spec, providers)
        if isinstance(read, str):
            skipped[key] = read
            continue
        fields, remarks, left = read
        if remarks:
            notes[key] = "; ".join(remarks)
        for name in left:
            unmapped.setdefault(name, []).append(key)
        fields.setdefault("source", DEFAULT_SOURCE)
        kept[key] = fields
    # "gemini/gemini-2.5-pro": events name the model without its provider prefix, so the
    # bare name becomes an alias, unless another entry already uses it
    bare: dict[str, list[str]] = {}
    for key, fields in kept.items():
        prefix, _, rest = key.partition("/")
        if rest and prefix == fields["provider"] and rest not in kept:
            bare.setdefault(rest, []).append(key)
    for alias, keys in bare.items():
        if len(keys) == 1:
            kept[keys[0]]["aliases"] = (alias,)
    entries: list[ModelPrice] = []
    for key, fields in kept.items():
        try:
            entries.append(ModelPrice(effective_from=effective_from,
                                      retrieved=retrieved or effective_from, **fields))
        except ValidationError as exc:
            skipped[key] = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return ImportResult(CostBook(entries), skipped, notes, {k: sorted(v) for k, v in sorted(unmapped.items())})
