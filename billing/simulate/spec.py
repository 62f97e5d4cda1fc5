"""Population specs: YAML files describing a synthetic population to simulate.

Format (see ``examples/population.yaml``; every key but ``segments`` is optional)::

    name: launch-mix
    description: ...
    period: 2026-10                 # a calendar month (UTC), or {start: ISO, end: ISO}
    seed: 7
    plans: [../plans/support-chatbot.yaml]   # default plans, relative to this file
    segments:
      light:
        customers: 400              # how many customers of this segment
        interactions: 30            # mean interactions per `interactions_per` (month|day|period)
        spread: 0.3                 # +/- relative variation of interactions between customers
        input_tokens: 2100          # per call (non-cached); output_tokens, cache_read_tokens
        token_jitter: 0.2           # +/- relative variation of tokens per call (0: exact)
        model_mix: {claude-sonnet-4-5: 0.55, gpt-5-mini: 0.45}
        exact_mix: false            # true: split calls across the mix exactly, not at random
        seats: 1
        escalation: {share: "0.2", model: claude-opus-4-1, input_tokens: 5000, output_tokens: 600}
        distribution: lognormal     # interactions per customer: uniform (+/- spread, default),
        sigma: 1.2                  #   lognormal (sigma) or pareto (alpha > 1), mean kept
        agentic: {share: 0.1, steps: 20, tokens_per_step: 1500}   # long agent tasks (synthetic.Agentic)
    levers: {cost_scale: 1, cache_hit_rate: 0.3, route: {to: {gpt-5-mini: 0.5}}, ...}
    prices:                         # optional inline cost book (per 1M tokens); default: shipped book
      chat-model: {input: "3", output: "15"}
    expect: {...}                   # free-form: the figures this spec is meant to reproduce

Numbers written without quotes are read from their text as Decimal (never through float).
Each interaction emits a ``request`` and an ``llm.call`` event (see ``synthetic.py``).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from billing.catalog import Plan, load_plan_file
from billing.costs import CostBook, ModelPrice
from billing.errors import BillingError, ErrorCode
from billing.rating.periods import Period, parse_period_label
from billing.simulate.core import CustomerInput
from billing.simulate.sim_event import SimEvent
from billing.simulate.levers import Levers
from billing.simulate.synthetic import Agentic, Escalation, Segment, customer_rows

Fraction01 = Annotated[float, Field(ge=0, le=1)]


class SpecInvalid(BillingError):
    code = ErrorCode.VALIDATION


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EscalationSpec(_Frozen):
    share: Annotated[Decimal, Field(ge=0, le=1)]
    model: str
    input_tokens: Annotated[int, Field(ge=0)] = 0
    output_tokens: Annotated[int, Field(ge=0)] = 0
    feature: str | None = None


class AgenticSpec(_Frozen):
    share: Fraction01
    steps: Annotated[float, Field(ge=1, le=10_000)] = 20
    tokens_per_step: Annotated[int, Field(ge=0)] = 1500


class SegmentSpec(_Frozen):
    customers: Annotated[int, Field(ge=0)]
    interactions: Annotated[float, Field(ge=0)]
    interactions_per: Literal["month", "day", "period"] = "month"
    spread: Fraction01 = 0.3
    input_tokens: Annotated[int, Field(ge=0)] = 2100
    output_tokens: Annotated[int, Field(ge=0)] = 400
    cache_read_tokens: Annotated[int, Field(ge=0)] = 0
    token_jitter: Fraction01 = 0.2
    model_mix: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: {"claude-sonnet-4-5": 1.0})
    exact_mix: bool = False
    feature: str = "support-chat"
    resolution_rate: Fraction01 = 0.0
    dispute_rate: Fraction01 = 0.0
    seats: Annotated[int, Field(ge=0)] = 1
    users: Annotated[int, Field(ge=1)] = 5
    escalation: EscalationSpec | None = None
    distribution: Literal["uniform", "lognormal", "pareto"] = "uniform"
    sigma: Annotated[float, Field(gt=0, le=4)] = 1.0
    alpha: Annotated[float, Field(gt=1, le=10)] = 1.5
    agentic: AgenticSpec | None = None

    @field_validator("model_mix")
    @classmethod
    def _mix(cls, value: dict) -> dict:
        if not value:
            raise ValueError("model_mix needs at least one model")
        return value

    def segment(self, name: str) -> Segment:
        esc = self.escalation
        return Segment(name, self.interactions, self.input_tokens, self.output_tokens, self.cache_read_tokens,
                       tuple((m, float(w)) for m, w in self.model_mix.items()), self.feature,
                       self.resolution_rate, self.dispute_rate, self.spread, self.token_jitter, self.seats,
                       self.interactions_per, self.exact_mix,
                       Escalation(str(esc.share), esc.model, esc.input_tokens, esc.output_tokens, esc.feature)
                       if esc else None, self.users, self.distribution, float(self.sigma), float(self.alpha),
                       Agentic(float(self.agentic.share), float(self.agentic.steps), self.agentic.tokens_per_step)
                       if self.agentic else None)


class PriceSpec(_Frozen):
    input: Annotated[Decimal, Field(ge=0)]
    output: Annotated[Decimal, Field(ge=0)] = Decimal(0)
    cache_read: Annotated[Decimal, Field(ge=0)] | None = None
    cache_write: Annotated[Decimal, Field(ge=0)] | None = None
    batch_discount: Annotated[Decimal, Field(ge=0, le=1)] = Decimal(0)


class PeriodSpec(_Frozen):
    start: datetime
    end: datetime


class PopulationSpec(_Frozen):
    name: str = ""
    description: str = ""
    period: str | PeriodSpec = "2026-10"
    seed: int = 0
    plans: tuple[str, ...] = ()
    segments: dict[str, SegmentSpec] = Field(min_length=1)
    levers: Levers = Field(default_factory=Levers)
    prices: dict[str, PriceSpec] | None = None
    expect: dict[str, Any] = Field(default_factory=dict)

    @field_validator("period", mode="before")
    @classmethod
    def _label(cls, value: Any) -> Any:
        return value.strftime("%Y-%m") if isinstance(value, date) else value

    def the_period(self) -> Period:
        if isinstance(self.period, PeriodSpec):
            try:
                return Period(self.period.start, self.period.end, f"{self.period.start.date()}..{self.period.end.date()}")
            except ValueError as exc:
                raise SpecInvalid(f"period: {exc}") from None
        try:
            return parse_period_label(self.period)
        except ValueError as exc:
            raise SpecInvalid(f"period: {exc}") from None

    def book(self, default: CostBook | None = None) -> CostBook:
        if self.prices is None:
            return default or CostBook.load_default()
        entries = [ModelPrice(model=model, provider="spec", effective_from=date(2000, 1, 1), input=p.input,
                              output=p.output, cache_read=p.cache_read, cache_write=p.cache_write,
                              reasoning=None, batch_discount=p.batch_discount, source="population spec",
                              retrieved=date(2000, 1, 1))
                   for model, p in self.prices.items()]
        return CostBook(entries)

    def customers(self) -> list[tuple[str, Segment]]:
        out = []
        for name, seg in self.segments.items():
            segment = seg.segment(name)
            out.extend((f"{name}-{i + 1:05d}", segment) for i in range(seg.customers))
        return out

    def customer_inputs(self, seed: int | None = None) -> list[CustomerInput]:
        """Draw the population (reproducible: same spec and seed, same events)."""
        period = self.the_period()
        seed = self.seed if seed is None else seed
        return [CustomerInput(customer, [SimEvent(i, customer, t, ts, props) for i, t, ts, props in
                                         customer_rows(customer, segment, period.start, period.end, seed)],
                              segment=segment.name, seats=segment.seats)
                for customer, segment in self.customers()]


class _Loader(yaml.SafeLoader):
    """Unquoted YAML floats become Decimal from their text."""


_Loader.add_constructor("tag:yaml.org,2002:float",
                        lambda loader, node: Decimal(loader.construct_scalar(node).replace("_", "")))


def parse_spec(text: str, origin: str = "<text>") -> PopulationSpec:
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise SpecInvalid(f"{origin}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecInvalid(f"{origin}: a population spec is a mapping with a 'segments:' key")
    try:
        return PopulationSpec.model_validate(data)
    except ValidationError as exc:
        problems = [f"{origin}: {'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()]
        raise SpecInvalid("\n".join(problems), details=problems) from None


def load_spec(path: str | Path) -> PopulationSpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecInvalid(f"{path}: cannot read: {exc.strerror}") from None
    return parse_spec(text, str(path))


def spec_plans(spec: PopulationSpec, spec_path: str | Path) -> list[Plan]:
    """The plans a spec names, relative to the spec file."""
    base = Path(spec_path).resolve().parent
    return [load_plan_file(base / p) for p in spec.plans]
