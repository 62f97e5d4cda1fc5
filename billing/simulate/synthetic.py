"""Seeded synthetic usage: light / medium / heavy / power users, several models.

Pure and reproducible: the same seed gives the same events. Usage per customer is uniform
(+/- ``spread``) or heavy-tailed (``lognormal``, ``pareto``), and a share of customers may
run long agent tasks (``Agentic``). Each *interaction* emits a
``request`` event (one fast/slow request, with its model) and an ``llm.call`` event (its
tokens); a share of interactions ends in a resolution ``outcome``, a few of which are
disputed within days.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from math import floor


@dataclass(frozen=True)
class Segment:
    name: str
    interactions: int  # mean interactions per customer per month
    input_tokens: int = 2100
    output_tokens: int = 400
    cache_read_tokens: int = 0
    model_mix: tuple[tuple[str, float], ...] = (("claude-sonnet-4-5", 1.0),)
    feature: str = "support-chat"
    resolution_rate: float = 0.0  # share of interactions that end in a resolution
    dispute_rate: float = 0.0  # share of resolutions disputed within the window
    spread: float = 0.3  # +/- relative variation of interactions between customers
    # -- extensions (defaults keep the original event streams unchanged) --
    token_jitter: float = 0.2  # +/- relative variation of token counts per call (0: exact counts)
    seats: int = 1  # seats each customer of the segment holds
    interactions_per: str = "month"  # "month" (30.4375 days), "day", or "period" (the whole window)
    exact_mix: bool = False  # True: split calls across model_mix exactly (error diffusion), not at random
    escalation: "Escalation | None" = None  # an extra call on another model for a share of interactions
    users: int = 5  # distinct `user` values per customer
    # -- heavy tails (the defaults keep the uniform draw) --
    distribution: str = "uniform"  # interactions per customer: "uniform" (+/- spread), "lognormal", "pareto"
    sigma: float = 1.0  # lognormal: the log's standard deviation (mean kept: exp(sigma Z - sigma^2 / 2))
    alpha: float = 1.5  # pareto: tail index > 1 (mean kept: (alpha - 1) / alpha x Pareto(alpha))
    agentic: "Agentic | None" = None  # a share of customers whose interactions are long agent tasks


@dataclass(frozen=True)
class Agentic:
    """A share of a segment's customers run agent tasks: each of their interactions is a task
    of several ``llm.call`` steps (exponentially distributed, mean ``steps``; property
    ``task``), each step's input ``tokens_per_step`` larger than the last (the context grows).
    Who is agentic and how long each task runs come from their own random stream: the other
    events of the customer are drawn as without it."""

    share: float
    steps: float = 20
    tokens_per_step: int = 1500


@dataclass(frozen=True)
class Escalation:
    """An extra ``llm.call`` for an exact share of interactions (e.g. a premium-model second pass).

    Which interactions escalate is deterministic: interaction ``i`` (0-based) escalates when
    ``floor((i + 1) * share) > floor(i * share)``, so ``n`` interactions escalate exactly
    ``floor(n * share)`` times."""

    share: str  # a decimal fraction, e.g. "0.2" (kept as text: exact)
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    feature: str | None = None  # default: the segment's feature


DEFAULT_MIX = (("claude-sonnet-4-5", 0.55), ("gpt-5-mini", 0.30), ("claude-opus-4-1", 0.05), ("gemini-2.5-flash", 0.10))

SEGMENTS: dict[str, Segment] = {
    "light": Segment("light", 30, model_mix=DEFAULT_MIX, resolution_rate=0.3, dispute_rate=0.05),
    "medium": Segment("medium", 150, model_mix=DEFAULT_MIX, resolution_rate=0.3, dispute_rate=0.05),
    "heavy": Segment("heavy", 500, input_tokens=4000, output_tokens=700, cache_read_tokens=2000,
                     model_mix=DEFAULT_MIX, resolution_rate=0.3, dispute_rate=0.05),
    "power": Segment("power", 2000, input_tokens=9000, output_tokens=1500, cache_read_tokens=6000,
                     model_mix=DEFAULT_MIX, resolution_rate=0.3, dispute_rate=0.05),
}


@dataclass(frozen=True)
class Population:
    """How many customers of each segment (segment name -> count)."""

    counts: dict[str, int] = field(default_factory=lambda: {"light": 4, "medium": 3, "heavy": 2, "power": 1})
    segments: dict[str, Segment] = field(default_factory=lambda: dict(SEGMENTS))

    def customers(self) -> list[tuple[str, Segment]]:
        out = []
        for name, count in self.counts.items():
            for i in range(count):
                out.append((f"{name}-{i + 1:03d}", self.segments[name]))
        return out


def _exact_picker(mix: tuple[tuple[str, float], ...]):
    """Assign calls to models so that after k calls each model has within one call of
    k x its weight share (largest deficit first; ties by mix order)."""
    from billing.simulate.levers import Allocator

    total = sum(Fraction(str(w)) for _, w in mix)
    return Allocator([(m, Fraction(str(w)) / total) for m, w in mix]).next


def _pick(rng: random.Random, mix: tuple[tuple[str, float], ...]) -> str:
    x = rng.random() * sum(w for _, w in mix)
    for model, weight in mix:
        x -= weight
        if x < 0:
            return model
    return mix[-1][0]


def customer_events(customer: str, segment: Segment, start: datetime, end: datetime,
                    seed: int = 0) -> Iterator[dict]:
    """Event dicts (the JSON apps send) for one customer over [start, end)."""
    for event_id, etype, ts, props in customer_rows(customer, segment, start, end, seed):
        yield {"id": event_id, "customer": customer, "type": etype,
               "timestamp": ts.isoformat().replace("+00:00", "Z"), "properties": props}


def customer_rows(customer: str, segment: Segment, start: datetime, end: datetime,
                  seed: int = 0) -> Iterator[tuple[str, str, datetime, dict]]:
    """``(id, type, timestamp, properties)`` of one customer's events over [start, end): the
    stream of ``customer_events`` without formatting timestamps (the simulations' fast path)."""
    rng = random.Random(f"{seed}:{customer}")
    seconds = int((end - start).total_seconds())
    unit = {"month": 30.4375 * 86400, "day": 86400.0}.get(segment.interactions_per, float(seconds or 1))
    months = seconds / unit
    mean = segment.interactions * months
    n = max(0, round(mean * _volume_factor(rng, segment)))
    agent = segment.agentic
    arng = random.Random(f"{seed}:{customer}:agentic") if agent else None
    agentic = arng is not None and arng.random() < agent.share
    pick = _exact_picker(segment.model_mix) if segment.exact_mix else (lambda: _pick(rng, segment.model_mix))
    esc = segment.escalation
    esc_share = Fraction(esc.share) if esc else Fraction(0)
    j = segment.token_jitter
    for i in range(n):
        ts = start + timedelta(seconds=rng.randrange(seconds))
        model = pick()
        jitter = rng.uniform(1 - j, 1 + j) if j != 0.2 else rng.uniform(0.8, 1.2)
        base = f"{customer}-{i:06d}"
        yield f"req-{base}", "request", ts, {"model": model, "feature": segment.feature}
        props = {"model": model, "input_tokens": int(segment.input_tokens * jitter),
                 "output_tokens": int(segment.output_tokens * jitter), "feature": segment.feature,
                 "user": f"u{rng.randrange(1, segment.users + 1)}"}
        if segment.cache_read_tokens:
            props["cache_read_tokens"] = int(segment.cache_read_tokens * jitter)
        if agentic:
            props["task"] = f"task-{base}"
        yield f"llm-{base}", "llm.call", ts, props
        if agentic:
            yield from _agent_steps(arng, agent, base, ts, end, props)
        if esc is not None and floor((i + 1) * esc_share) > floor(i * esc_share):
            yield f"esc-{base}", "llm.call", ts, {
                "model": esc.model, "input_tokens": esc.input_tokens, "output_tokens": esc.output_tokens,
                "feature": esc.feature or segment.feature, "user": props["user"], "escalation": True}
        if rng.random() < segment.resolution_rate:
            yield f"out-{base}", "outcome", ts, {"outcome": "resolution", "outcome_id": f"conv-{base}"}
            if rng.random() < segment.dispute_rate:
                later = ts + timedelta(hours=rng.randrange(1, 72))
                yield f"dis-{base}", "outcome.disputed", later, {"outcome_id": f"conv-{base}"}


def _volume_factor(rng: random.Random, segment: Segment) -> float:
    """A customer's interactions relative to the segment's mean (mean 1 for every distribution)."""
    if segment.distribution == "lognormal":
        return math.exp(segment.sigma * rng.gauss(0.0, 1.0) - segment.sigma ** 2 / 2)
    if segment.distribution == "pareto":
        return (segment.alpha - 1) / segment.alpha * rng.paretovariate(segment.alpha)
    return 1 + rng.uniform(-segment.spread, segment.spread)


def _agent_steps(rng: random.Random, agent: Agentic, base: str, ts: datetime, end: datetime,
                 first: dict) -> Iterator[tuple[str, str, datetime, dict]]:
    """The task's steps after its first call: one a second, each with a larger context."""
    steps = max(1, round(rng.expovariate(1 / agent.steps)))
    for k in range(1, steps):
        at = ts + timedelta(seconds=k)
        if at >= end:
            return
        yield f"step-{base}-{k:04d}", "llm.call", at, {
            **first, "input_tokens": first["input_tokens"] + k * agent.tokens_per_step}


def population_events(population: Population, start: datetime, end: datetime, seed: int = 0) -> Iterator[dict]:
    for customer, segment in population.customers():
        yield from customer_events(customer, segment, start, end, seed)
