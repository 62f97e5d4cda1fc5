"""Seeded synthetic usage: light / medium / heavy / power users, several models.

Pure and reproducible: the same seed gives the same events. Each *interaction* emits a
``request`` event (one fast/slow request, with its model) and an ``llm.call`` event (its
tokens); a share of interactions ends in a resolution ``outcome``, a few of which are
disputed within days.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta


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
    rng = random.Random(f"{seed}:{customer}")
    seconds = int((end - start).total_seconds())
    months = seconds / (30.4375 * 86400)
    mean = segment.interactions * months
    n = max(0, round(mean * (1 + rng.uniform(-segment.spread, segment.spread))))
    for i in range(n):
        ts = start + timedelta(seconds=rng.randrange(seconds))
        model = _pick(rng, segment.model_mix)
        jitter = rng.uniform(0.8, 1.2)
        base = f"{customer}-{i:06d}"
        stamp = ts.isoformat().replace("+00:00", "Z")
        yield {"id": f"req-{base}", "customer": customer, "type": "request", "timestamp": stamp,
               "properties": {"model": model, "feature": segment.feature}}
        props = {"model": model, "input_tokens": int(segment.input_tokens * jitter),
                 "output_tokens": int(segment.output_tokens * jitter), "feature": segment.feature,
                 "user": f"u{rng.randrange(1, 6)}"}
        if segment.cache_read_tokens:
            props["cache_read_tokens"] = int(segment.cache_read_tokens * jitter)
        yield {"id": f"llm-{base}", "customer": customer, "type": "llm.call", "timestamp": stamp,
               "properties": props}
        if rng.random() < segment.resolution_rate:
            yield {"id": f"out-{base}", "customer": customer, "type": "outcome", "timestamp": stamp,
                   "properties": {"outcome": "resolution", "outcome_id": f"conv-{base}"}}
            if rng.random() < segment.dispute_rate:
                later = ts + timedelta(hours=rng.randrange(1, 72))
                yield {"id": f"dis-{base}", "customer": customer, "type": "outcome.disputed",
                       "timestamp": later.isoformat().replace("+00:00", "Z"),
                       "properties": {"outcome_id": f"conv-{base}"}}


def population_events(population: Population, start: datetime, end: datetime, seed: int = 0) -> Iterator[dict]:
    for customer, segment in population.customers():
        yield from customer_events(customer, segment, start, end, seed)
