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

from pydantic import ValidationError

from billing.costs.book import CostBook, ModelPrice, dump_yaml
from billing.money import ONE, ZERO, to_decimal

__all__ = ["ImportResult", "import_litellm", "dump_yaml"]

DEFAULT_SOURCE = "LiteLLM model_prices_and_context_window.json"
TEXT_MODES = frozenset({"chat", "completion", "responses"})  # plus a missing mode
# cost-book field <- LiteLLM per-token key
_PRICE_KEYS = {
    "input": "input_cost_per_token",
    "output": "output_cost_per_token",
    "cache_read": "cache_read_input_token_cost",
    "cache_write": "cache_creation_input_token_cost",
    "reasoning": "output_cost_per_reasoning_token",
}


@dataclass(frozen=True)
class ImportResult:
    """The imported book, the keys skipped (key -> reason) and notes on kept entries."""

    book: CostBook
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


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


def _per_million(value: Any) -> Decimal | None:
    """Per-token price -> per-1M-token price, exactly (None when absent)."""
    if value is None:
        return None
    return to_decimal(value).scaleb(6)


def _batch_discount(spec: dict[str, Any]) -> Decimal:
    """1 - batch price / standard price, from input (else output) prices; 0 if unknown."""
    for standard, batch in (("input_cost_per_token", "input_cost_per_token_batches"),
                            ("output_cost_per_token", "output_cost_per_token_batches")):
        if spec.get(standard) is not None and spec.get(batch) is not None:
            regular = to_decimal(spec[standard])
            if regular > 0:
                return ONE - to_decimal(spec[batch]) / regular
    return ZERO


# LiteLLM price keys this book does not model, and what the import keeps instead
_UNMODELLED = (
    (re.compile(r"_above_\d+k_tokens"), "long-context prices (e.g. above 200k tokens): the base tier is kept"),
    (re.compile(r"_flex$"), "flex-tier prices: the standard tier is kept"),
    (re.compile(r"_priority$"), "priority-tier prices: the standard tier is kept"),
    (re.compile(r"_above_\d+hr"), "longer-lived cache writes (1 hour+): the 5-minute cache write price is kept"),
)


def _unmodelled(spec: dict[str, Any]) -> str:
    """A note naming the per-token price variants of an entry that the import leaves out."""
    notes = [text for pattern, text in _UNMODELLED
             if any("cost" in k and pattern.search(k) and spec.get(k) is not None for k in spec)]
    return "; ".join(notes)


def _batch_mismatch(spec: dict[str, Any]) -> str:
    ratios = set()
    for standard, batch in (("input_cost_per_token", "input_cost_per_token_batches"),
                            ("output_cost_per_token", "output_cost_per_token_batches")):
        if spec.get(batch) is not None and to_decimal(spec.get(standard) or 0) > 0:
            ratios.add(to_decimal(spec[batch]) / to_decimal(spec[standard]))
    return "input and output batch discounts differ: the input one is kept" if len(ratios) > 1 else ""


def _entry(key: str, spec: Any, providers: set[str] | None) -> dict[str, Any] | str:
    """The ModelPrice fields for one LiteLLM entry, or the reason to skip it."""
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
    fields: dict[str, Any] = {"model": key, "provider": provider}
    try:
        for name, litellm_key in _PRICE_KEYS.items():
            fields[name] = _per_million(spec.get(litellm_key))
        fields["batch_discount"] = _batch_discount(spec)
    except (ArithmeticError, TypeError, ValueError):
        return "a price is not a number"
    if isinstance(spec.get("source"), str) and spec["source"].strip():
        fields["source"] = spec["source"].strip()
    return fields


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
    A batch price cheaper than the standard one sets ``batch_discount``; an odd one
    (dearer than standard) is ignored and noted in ``ImportResult.notes``. Price variants
    the book does not model (``*_above_200k_tokens`` and other long-context tiers, flex and
    priority tiers, 1-hour cache writes) are noted there too; the base prices are kept. A
    key prefixed by its own provider (``gemini/gemini-2.5-pro``) also answers to the bare
    name (``gemini-2.5-pro``) when no other entry has it.
    """
    raw = _load(data)
    kept: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    notes: dict[str, str] = {}
    for key, spec in raw.items():
        if key == "sample_spec":
            skipped[key] = "LiteLLM's documentation entry, not a model"
            continue
        fields = _entry(key, spec, providers)
        if isinstance(fields, str):
            skipped[key] = fields
            continue
        remarks = [_unmodelled(spec), _batch_mismatch(spec)]
        if not ZERO <= fields["batch_discount"] <= ONE:
            remarks.append(f"batch price gives discount {fields['batch_discount']}; ignored")
            fields["batch_discount"] = ZERO
        if any(remarks):
            notes[key] = "; ".join(r for r in remarks if r)
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
    return ImportResult(CostBook(entries), skipped, notes)
