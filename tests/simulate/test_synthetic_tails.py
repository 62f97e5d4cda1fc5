"""Heavy-tailed synthetic populations: Pareto and lognormal usage keep the segment's mean and
concentrate usage in a few customers; a share of customers runs long agent tasks."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from billing.simulate.spec import SpecInvalid, load_spec, parse_spec
from billing.simulate.synthetic import Agentic, Segment, customer_rows

ROOT = Path(__file__).resolve().parents[2]
START, END = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)


def interactions(segment: Segment, customers: int = 1500) -> list[int]:
    return [sum(1 for _, t, _, _ in customer_rows(f"c{i}", segment, START, END, seed=5) if t == "request")
            for i in range(customers)]


def top_decile_share(counts: list[int]) -> float:
    ordered = sorted(counts, reverse=True)
    return sum(ordered[: len(ordered) // 10]) / sum(ordered)


def test_uniform_keeps_usage_spread_evenly():
    counts = interactions(Segment("u", 12, interactions_per="period", spread=0.3))
    assert abs(sum(counts) / len(counts) - 12) < 0.5 and top_decile_share(counts) < 0.15


@pytest.mark.parametrize("segment, tail", [
    (Segment("p", 12, interactions_per="period", distribution="pareto", alpha=1.3), 0.35),
    (Segment("l", 12, interactions_per="period", distribution="lognormal", sigma=1.2), 0.35),
])
def test_heavy_tails_keep_the_mean_and_put_usage_in_few_customers(segment, tail):
    counts = interactions(segment)
    assert top_decile_share(counts) > tail  # a tenth of the customers: over a third of the usage
    mean_segment = Segment("m", 12, interactions_per="period", distribution=segment.distribution,
                           alpha=3.0, sigma=0.5)  # a lighter tail: the sample mean settles
    assert abs(sum(interactions(mean_segment)) / 1500 - 12) < 1.2


def test_agentic_customers_run_long_tasks_with_growing_context():
    segment = Segment("a", 10, interactions_per="period", input_tokens=1000, token_jitter=0.0,
                      agentic=Agentic(share=0.3, steps=8, tokens_per_step=500))
    agentic, steps = 0, []
    for i in range(300):
        calls = [p for _, t, _, p in customer_rows(f"c{i}", segment, START, END, seed=1) if t == "llm.call"]
        tasks = Counter(p["task"] for p in calls if "task" in p)
        if tasks:
            agentic += 1
            steps.extend(tasks.values())
            first = [p["input_tokens"] for p in calls if p["task"] == next(iter(tasks))]
            assert first == [1000 + 500 * k for k in range(len(first))]
        else:
            assert len(calls) == sum(1 for _, t, _, _ in customer_rows(f"c{i}", segment, START, END, seed=1)
                                     if t == "request")
    assert 60 <= agentic <= 120  # 30% of 300
    assert 6 <= sum(steps) / len(steps) <= 10 and max(steps) > 25  # exponential: mean 8, a long tail


def test_spec_validates_the_tail_parameters():
    base = "segments: {x: {customers: 1, interactions: 5, distribution: %s}}"
    with pytest.raises(SpecInvalid, match="segments.x.distribution"):
        parse_spec(base % "zipf")
    with pytest.raises(SpecInvalid, match="segments.x.alpha"):
        parse_spec(base % "pareto, alpha: 1")
    with pytest.raises(SpecInvalid, match="segments.x.agentic.share"):
        parse_spec(base % "uniform, agentic: {share: 2}")
    spec = load_spec(ROOT / "examples" / "heavy-tail-population.yaml")
    teams = spec.segments["teams"].segment("teams")
    assert teams.distribution == "lognormal" and teams.agentic == Agentic(0.15, 12.0, 1200)
