"""What-if levers: pure transforms of usage events before they are costed.

A simulation may change how usage *would have been served* and what it *would have cost*:

- ``cost_scale``: every provider price multiplied by ``k`` (``CostBook.scaled``), e.g. 0.5
  for "prices halve";
- ``cost_date``: cost every event with the prices in force on that date instead of at the
  event's own time;
- ``route``: move an exact share of calls to other (cheaper) models;
- ``cache_hit_rate``: move that share of each call's (non-cached) input tokens to
  ``cache_read_tokens`` (billed at the cache-read price);
- ``batch_share``: send that share of calls through the batch API (``batch: true``, the
  model's ``batch_discount``);
- ``max_output_tokens``: cap each call's output tokens;
- ``semantic_cache``: serve a share of the calls from a semantic cache at a stated cost per hit;
- ``enforce_quota``: replay each candidate plan's quota decision on the usage (``gate.py``):
  calls past a fast quota re-priced on the slow lane's model, denied calls removed.

Transforms apply in that order: route, cache, batch, cap, semantic cache; the quota replay
comes last, per plan. They never mutate their input.

Shares are exact, not random: an eligible event is assigned by *error diffusion* (after
``k`` eligible events of a type, each target has within one event of ``k x share``), in the
order the events are given. ``request`` and ``llm.call`` events are counted separately, so
an interaction's request and its call (same order in both streams) go to the same model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from math import gcd
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from billing.events import UsageEvent
from billing.money import dec_str
from billing.simulate.sim_event import SimEvent

Share = Annotated[Decimal, Field(ge=0, le=1)]
ROUTED_TYPES = ("llm.call", "request")
TOKEN_TYPES = ("llm.call",)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Route(_Frozen):
    """Send ``to[model]`` of the eligible calls to ``model``; the rest keep their model.

    Eligible: ``llm.call`` and ``request`` events with a ``model`` property, restricted to
    ``from_models`` when given. Shares must sum to at most 1.
    """

    to: dict[str, Share]
    from_models: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _sum(self) -> "Route":
        if sum(self.to.values(), Decimal(0)) > 1:
            raise ValueError("route shares must sum to at most 1")
        if not self.to:
            raise ValueError("route needs at least one target model")
        return self


class SemanticCache(_Frozen):
    """Serve ``share`` of the calls from a semantic cache: such a call costs ``cost_per_hit``
    (the cache's own cost: lookup, embedding, storage) instead of its tokens' provider price.
    The customer still got the answer: its meters count it as before."""

    share: Share
    cost_per_hit: Annotated[Decimal, Field(ge=0)] = Decimal(0)


class Levers(_Frozen):
    cost_scale: Annotated[Decimal, Field(ge=0)] = Decimal(1)
    cost_date: date | None = None
    route: Route | None = None
    cache_hit_rate: Share = Decimal(0)
    batch_share: Share = Decimal(0)
    max_output_tokens: Annotated[int, Field(ge=0)] | None = None
    semantic_cache: SemanticCache | None = None
    enforce_quota: bool = False  # replay each plan's quota decision (``gate.py``): per plan usage and cost

    @property
    def changes_events(self) -> bool:
        return bool(self.route or self.cache_hit_rate or self.batch_share or self.max_output_tokens is not None
                    or (self.semantic_cache and self.semantic_cache.share))

    @property
    def is_identity(self) -> bool:
        return not self.changes_events and self.cost_scale == 1 and self.cost_date is None and not self.enforce_quota

    def describe(self) -> list[str]:
        out = []
        if self.cost_scale != 1:
            out.append(f"provider prices x {self.cost_scale}")
        if self.cost_date:
            out.append(f"prices as of {self.cost_date.isoformat()}")
        if self.route:
            targets = ", ".join(f"{m} {dec_str(s * 100)}%" for m, s in self.route.to.items())
            origin = f" (from {', '.join(self.route.from_models)})" if self.route.from_models else ""
            out.append(f"route calls{origin}: {targets}")
        if self.cache_hit_rate:
            out.append(f"prompt-cache hit rate {dec_str(self.cache_hit_rate * 100)}%")
        if self.batch_share:
            out.append(f"batch share {dec_str(self.batch_share * 100)}%")
        if self.max_output_tokens is not None:
            out.append(f"output capped at {self.max_output_tokens} tokens")
        if self.semantic_cache and self.semantic_cache.share:
            out.append(f"semantic cache serves {dec_str(self.semantic_cache.share * 100)}% of calls at "
                       f"{dec_str(self.semantic_cache.cost_per_hit)} a hit")
        if self.enforce_quota:
            out.append("each plan's quota decision replayed (slow lane re-priced, denied calls removed)")
        return out


class Allocator:
    """Error diffusion over targets with exact fractional shares (the remainder: ``None``).

    Each call hands the next item to the target with the largest deficit
    ``share x k - assigned`` (ties: the first target), in exact integer arithmetic."""

    def __init__(self, shares: Sequence[tuple[Any, Fraction]]):
        rest = 1 - sum((s for _, s in shares), Fraction(0))
        targets = [*shares, (None, rest)] if rest > 0 else list(shares)
        denom = 1
        for _, s in targets:
            denom = denom * s.denominator // gcd(denom, s.denominator)
        self.names = [t for t, _ in targets]
        self.weights = [int(s * denom) for _, s in targets]
        self.denom = denom
        self.counts = [0] * len(targets)
        self.k = 0

    def next(self) -> Any:
        self.k += 1
        k, d, counts, weights = self.k, self.denom, self.counts, self.weights
        best, best_deficit = 0, None
        for i in range(len(weights)):
            deficit = weights[i] * k - counts[i] * d
            if best_deficit is None or deficit > best_deficit:
                best, best_deficit = i, deficit
        counts[best] += 1
        return self.names[best]


def _frac(value: Decimal) -> Fraction:
    return Fraction(value)


def _copy(event: Any, properties: dict) -> SimEvent:
    return SimEvent(event.id, event.customer, event.type, event.timestamp, properties)


def route_calls(events: Iterable[UsageEvent], route: Route) -> list[UsageEvent]:
    shares = [(model, _frac(share)) for model, share in route.to.items() if share > 0]
    allocators: dict[str, Allocator] = {}
    origin = set(route.from_models) if route.from_models else None
    out = []
    for e in events:
        model = e.properties.get("model")
        if e.type not in ROUTED_TYPES or model is None or (origin is not None and str(model) not in origin):
            out.append(e)
            continue
        alloc = allocators.get(e.type)
        if alloc is None:
            alloc = allocators[e.type] = Allocator(shares)
        target = alloc.next()
        out.append(e if target is None or target == model else _copy(e, {**e.properties, "model": target}))
    return out


def apply_cache_hits(events: Iterable[UsageEvent], rate: Decimal) -> list[UsageEvent]:
    """Move round_half_up(input_tokens x rate) tokens from input to cache_read, per call."""
    out = []
    for e in events:
        raw = e.properties.get("input_tokens")
        if e.type not in TOKEN_TYPES or raw is None or rate == 0:
            out.append(e)
            continue
        tokens = e.number("input_tokens")
        moved = (tokens * rate).to_integral_value(ROUND_HALF_UP)
        if moved == 0:
            out.append(e)
            continue
        cached = e.number("cache_read_tokens", Decimal(0))
        out.append(_copy(e, {**e.properties, "input_tokens": _num(tokens - moved),
                             "cache_read_tokens": _num(cached + moved)}))
    return out


def apply_batch_share(events: Iterable[UsageEvent], share: Decimal) -> list[UsageEvent]:
    alloc = Allocator([(True, _frac(share))])
    out = []
    for e in events:
        if e.type not in TOKEN_TYPES or share == 0 or not any(k.endswith("_tokens") for k in e.properties):
            out.append(e)
            continue
        out.append(_copy(e, {**e.properties, "batch": True}) if alloc.next() else e)
    return out


def cap_output_tokens(events: Iterable[UsageEvent], cap: int) -> list[UsageEvent]:
    out = []
    for e in events:
        raw = e.properties.get("output_tokens")
        if raw is not None and e.number("output_tokens") > cap:
            out.append(_copy(e, {**e.properties, "output_tokens": cap}))
        else:
            out.append(e)
    return out


def apply_semantic_cache(events: Iterable[UsageEvent], cache: SemanticCache) -> list[UsageEvent]:
    """An exact share of the calls (error diffusion) served from the cache: their provider
    cost becomes the reported ``cost`` of a hit (``cost_breakdown`` uses it as is)."""
    alloc = Allocator([(True, _frac(cache.share))])
    out = []
    for e in events:
        if e.type not in TOKEN_TYPES or cache.share == 0 or not any(k.endswith("_tokens") for k in e.properties):
            out.append(e)
            continue
        hit = alloc.next()
        out.append(_copy(e, {**e.properties, "cost": dec_str(cache.cost_per_hit), "semantic_cache_hit": True})
                   if hit else e)
    return out


def apply_levers(events: Iterable[UsageEvent], levers: Levers) -> list[UsageEvent]:
    """The event-level levers, in order: route, cache, batch, cap, semantic cache (cost levers
    act at costing)."""
    out = list(events)
    if levers.route:
        out = route_calls(out, levers.route)
    if levers.cache_hit_rate:
        out = apply_cache_hits(out, levers.cache_hit_rate)
    if levers.batch_share:
        out = apply_batch_share(out, levers.batch_share)
    if levers.max_output_tokens is not None:
        out = cap_output_tokens(out, levers.max_output_tokens)
    if levers.semantic_cache and levers.semantic_cache.share:
        out = apply_semantic_cache(out, levers.semantic_cache)
    return out


def _num(value: Decimal) -> int | Decimal:
    return int(value) if value == value.to_integral_value() else value


def parse_route(text: str, from_models: str | None = None) -> Route:
    """CLI form: ``"gpt-5-mini=0.7,claude-sonnet-4-5=0.2"``."""
    to: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        model, sep, share = part.partition("=")
        if not sep:
            raise ValueError(f"route part {part!r} must look like model=share")
        to[model.strip()] = share.strip()
    origin = tuple(m.strip() for m in from_models.split(",") if m.strip()) if from_models else None
    return Route.model_validate({"to": to, "from_models": origin})
