"""The plan language: frozen pydantic models, discriminated unions, ``extra="forbid"``.

A plan file (YAML in ``plans/``) is one *version* of a plan. Shape, after Kill Bill's
catalog: plan -> recurring fees + meters + usage charges (each with a price model and an
exhaustion policy) + credits, commitments and guardrails + features (``features.py``). The
keys, amounts and strict frozen base are in ``base.py``. See ``plans/README.md``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import AfterValidator, Field, field_validator

from billing.catalog.base import Frozen, Key, Money, Positive, RateLimit
from billing.catalog.features import FeatureValue, MeteredFeature  # noqa: F401  (the plan's features)
from billing.catalog.guards import CostGuard
from billing.catalog.overhead import Overhead

from billing.catalog.filters import FilterRule, FilterValue, filter_rules, rule_holds

if TYPE_CHECKING:
    from billing.catalog.compiled import CompiledPlan


# --------------------------------------------------------------------------- meters

class Multipliers(Frozen):
    """Weight each event by a property value, e.g. a premium request on one model counts 3x."""

    property: str = "model"
    values: dict[str, Money]  # 0 = does not count (a base model)
    default: Positive = Decimal(1)

    def factor(self, properties: dict) -> Decimal:
        value = properties.get(self.property)
        return self.values.get(str(value), self.default) if value is not None else self.default


class Disputes(Frozen):
    """Outcome metering: an outcome disputed or reopened inside the window is not billed."""

    window_days: Annotated[int, Field(ge=0, le=366)]
    id_property: str = "outcome_id"
    dispute_types: tuple[str, ...] = ("outcome.disputed", "outcome.reopened")


# aggregations of a value that have no running counter: the ledger reads them from the events
VALUE_AGGREGATIONS = ("latest", "min", "avg", "time_weighted_sum")
TIME_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


class Meter(Frozen):
    """Aggregates one event type's property over a period: count / sum / max / unique_count,
    and latest / min / avg / time_weighted_sum (``billing.rating.levels``)."""

    key: Key
    name: str = ""
    event_type: str = Field(min_length=1)
    aggregation: Literal["count", "sum", "max", "unique_count", "latest", "min", "avg", "time_weighted_sum"] = "count"
    property: str | None = None
    time_unit: Literal["second", "minute", "hour", "day"] | None = None  # time_weighted_sum: level x this
    filter: dict[str, FilterValue] = Field(default_factory=dict)
    multipliers: Multipliers | None = None
    disputes: Disputes | None = None

    @cached_property
    def _filter_rules(self) -> tuple[FilterRule, ...]:
        return filter_rules(self.filter)

    @cached_property
    def _filter_sets(self) -> tuple[tuple[str, frozenset[str]], ...] | None:
        """The filter as (property, allowed texts) when every rule is ``in`` (the counters'
        fast path), else None."""
        rules = self._filter_rules
        if any(op != "in" for _, op, _ in rules):
            return None
        return tuple((prop, operand) for prop, _, operand in rules)  # type: ignore[misc]

    def matches(self, event_type: str, properties: dict) -> bool:
        """The event is of this meter's type and every filter rule holds (values compare
        as text: 5 matches "5"; ``not`` matches an absent property)."""
        if event_type != self.event_type:
            return False
        sets = self._filter_sets
        if sets is not None:  # plain values and lists (the common case, on the ingestion path): inline
            for prop, options in sets:
                value = properties.get(prop)
                if value is None or (value if type(value) is str else str(value)) not in options:
                    return False
            return True
        for rule in self._filter_rules:
            if not rule_holds(rule, properties):
                return False
        return True

    def allowed_example(self, prop: str) -> tuple[bool, object]:
        """(present?, value) of a property value the filter lets through, for a property
        not known yet (the client's pre-check): absent when the filter allows that."""
        rules = [r for r in self._filter_rules if r[0] == prop]
        if all(rule_holds(r, {}) for r in rules):
            return False, None
        for _, op, operand in rules:
            if op == "in":
                for text in sorted(operand):  # type: ignore[arg-type]
                    if all(rule_holds(r, {prop: text}) for r in rules):
                        return True, text
                return True, None
        return True, "\x00any"  # exists: true (and perhaps a not): a value no list names


# ---------------------------------------------------------------------- price models

class Tier(Frozen):
    up_to: Positive | None = None  # None: unbounded (only the last tier)
    unit_price: Money = Decimal(0)
    flat_fee: Money = Decimal(0)


def _check_tiers(tiers: list[Tier]) -> list[Tier]:
    problems = []
    for i, tier in enumerate(tiers[:-1]):
        if tier.up_to is None:
            problems.append(f"tier {i}: only the last tier may be unbounded (up_to: null)")
        elif tiers[i + 1].up_to is not None and tiers[i + 1].up_to <= tier.up_to:
            problems.append(f"tier {i + 1}: up_to must be greater than {tier.up_to}")
    if tiers and tiers[-1].up_to is not None:
        problems.append("the last tier must be unbounded (up_to: null)")
    if problems:
        raise ValueError("; ".join(problems))
    return tiers


Tiers = Annotated[list[Tier], Field(min_length=1), AfterValidator(_check_tiers)]


class PerUnitPrice(Frozen):
    model: Literal["per_unit"]
    unit_price: Money


class GraduatedPrice(Frozen):
    """Each tier prices only the units that fall inside it (1-5 @ 7, 6-10 @ 6.50 ...).

    ``block_size``: the units inside each tier are billed per started block (Kill Bill's
    consumable blocks; tier limits stay in units and must be multiples of the block).
    ``flat_fee_at_zero``: bill the first tier's flat fee at zero usage (Stripe) instead of
    only once usage reaches it (Lago, the default)."""

    model: Literal["graduated"]
    tiers: Tiers
    block_size: Positive | None = None
    flat_fee_at_zero: bool = False


class VolumePrice(Frozen):
    """The tier the total quantity reaches prices every unit; its flat fee is added once.
    ``block_size`` and ``flat_fee_at_zero`` as for ``GraduatedPrice``."""

    model: Literal["volume"]
    tiers: Tiers
    block_size: Positive | None = None
    flat_fee_at_zero: bool = False


class PackagePrice(Frozen):
    """Blocks of ``package_size`` units at ``package_price``; partial blocks round up."""

    model: Literal["package"]
    package_size: Positive
    package_price: Money
    free_units: Money = Decimal(0)


class PercentagePrice(Frozen):
    """A share of a transaction amount (the meter sums it), plus a fixed fee per transaction."""

    model: Literal["percentage"]
    rate: Annotated[Decimal, Field(ge=0, le=1)]
    fixed_fee: Money = Decimal(0)
    min_per_transaction: Money | None = None
    max_per_transaction: Money | None = None
    free_units: Annotated[int, Field(ge=0)] = 0  # free transactions
    free_amount: Money = Decimal(0)  # transaction amount not charged

    @property
    def per_transaction(self) -> bool:
        """Rated one transaction at a time (a min/max per transaction or a free allowance):
        needs each event's value, not only the period's sum and count."""
        return (self.min_per_transaction is not None or self.max_per_transaction is not None
                or self.free_units > 0 or self.free_amount > 0)


class CapacityTier(Frozen):
    """A capacity tier: the most each meter may peak at (``None``: unbounded, only the last
    tier), and the tier's flat amount for the period."""

    up_to: dict[Key, Positive] | None = None
    flat_fee: Money


class CapacityPrice(Frozen):
    """Capacity across meters: the lowest tier in which every named meter's period peak fits
    (``max`` meters, e.g. concurrent agents and memory together) bills its flat amount.
    ``flat_fee_at_zero``: bill the first tier when every peak is 0 (Stripe) -- by default a
    period without usage bills nothing (Lago)."""

    model: Literal["capacity"]
    meters: Annotated[tuple[Key, ...], Field(min_length=1)]
    tiers: Annotated[list[CapacityTier], Field(min_length=1)]
    flat_fee_at_zero: bool = False


class CostPlusPrice(Frozen):
    """Provider cost of the metered events x (1 + markup)."""

    model: Literal["cost_plus"]
    markup: Money


# what one value of a dimension price is priced by (not a percentage: a value's units are
# priced as one quantity; not volume: a charge's amount never falls as its usage grows,
# which the quota's spend-cap holds rely on; not a nested dimension)
ValuePrice = Annotated[
    Union[PerUnitPrice, GraduatedPrice, PackagePrice, CostPlusPrice],
    Field(discriminator="model"),
]


class DimensionPrice(Frozen):
    """One charge priced by a property's value (Lago's grouped charges, OpenMeter's group-by):
    the meter's units are split by the value of ``property`` on each event, and each value's
    units are priced by ``prices[value]`` -- or ``default`` for any other value, an absent
    one, and usage known only as a total (live holds, simulations) -- each its own invoice
    line. The charge's included units are drawn from the values in the order ``prices``
    lists them, then the other values in text order (``billing.rating.charges.dimension``)."""

    model: Literal["dimension"]
    property: str = Field(min_length=1)
    prices: dict[Annotated[str, Field(min_length=1, max_length=200)], ValuePrice] = Field(min_length=1)
    default: ValuePrice


Price = Annotated[
    Union[PerUnitPrice, GraduatedPrice, VolumePrice, PackagePrice, PercentagePrice, CostPlusPrice, CapacityPrice,
          DimensionPrice],
    Field(discriminator="model"),
]


# ------------------------------------------------------------------ exhaustion policy

class BlockPolicy(Frozen):
    """Deny once the included units are used."""

    policy: Literal["block"]


class SlowTierPolicy(Frozen):
    """Cursor-style: after the included (fast) units, continue on a slow tier.

    The slow tier names a cheaper ``model`` and/or a ``rate_limit``; its units are billed
    at ``unit_price`` (default 0: unlimited slow use is part of the plan).
    """

    policy: Literal["downgrade"]
    model: str | None = None
    rate_limit: RateLimit | None = None
    unit_price: Money = Decimal(0)


class RateLimitPolicy(Frozen):
    """After the included units, allow at most ``limit`` per window (billed like overage)."""

    policy: Literal["rate_limit"]
    rate_limit: RateLimit


class OveragePolicy(Frozen):
    """Bill units past the included ones with the charge's price, up to an optional spend cap."""

    policy: Literal["overage"]
    spend_cap: Money | None = None


Exhaustion = Annotated[
    Union[BlockPolicy, SlowTierPolicy, RateLimitPolicy, OveragePolicy],
    Field(discriminator="policy"),
]


class Included(Frozen):
    """Included units: ``per_seat`` x seats, plus ``pooled`` shared by the whole account."""

    per_seat: Money = Decimal(0)
    pooled: Money = Decimal(0)

    def units(self, seats: Decimal) -> Decimal:
        return self.per_seat * seats + self.pooled


class UsageCharge(Frozen):
    key: Key
    name: str = ""
    meter: Key
    included: Included | None = None
    price: Price | None = None
    on_exhaustion: Exhaustion = Field(default_factory=lambda: OveragePolicy(policy="overage"))


# ----------------------------------------------------------------- recurring fees

class FlatFee(Frozen):
    type: Literal["flat"]
    key: Key
    name: str = ""
    amount: Money
    timing: Literal["advance", "arrears"] = "advance"


class SeatFee(Frozen):
    """Per-seat fee. ``advance``: seats at period start for the whole period, increases
    prorated over the remaining time; a decrease takes effect next period
    (``on_decrease: next_period``) or credits the unused time of the seats removed,
    prorated (``credit_unused``). ``arrears``: the exact time-weighted seat count."""

    type: Literal["per_seat"]
    key: Key
    name: str = ""
    unit_price: Money
    timing: Literal["advance", "arrears"] = "advance"
    min_seats: Annotated[int, Field(ge=0)] = 0
    on_decrease: Literal["next_period", "credit_unused"] = "next_period"


Fee = Annotated[Union[FlatFee, SeatFee], Field(discriminator="type")]


# ------------------------------------------------------ credits, caps and guardrails

class RecurringCredit(Frozen):
    """Prepaid credits granted each period (pooled across seats), expiring at period end,
    drawn before overage is billed."""

    key: Key
    name: str = ""
    amount: Money
    per_seat: bool = False
    applies_to: tuple[Key, ...] | None = None  # charge keys; None: every usage charge


class MinimumCommitment(Frozen):
    amount: Money
    applies_to: Literal["usage", "all"] = "all"


class BudgetAlerts(Frozen):
    """Alert when usage crosses these percentages of an allowance, spend cap or budget."""

    thresholds_percent: tuple[Positive, ...] = (Decimal(50), Decimal(80), Decimal(100))
    budget: Money | None = None


class AgentLimits(Frozen):
    """Per agent task (events sharing ``task_property``): max steps, tokens, provider cost;
    per call: the most retries of one step and the deepest sub-agent call (the request's
    ``retry`` / ``depth``, which the wrapper also records as the ``retry_property`` /
    ``depth_property`` of the call's event; 0 = first attempt / the top-level agent)."""

    task_property: str = "task"
    max_steps: Annotated[int, Field(gt=0)] | None = None
    max_tokens: Annotated[int, Field(gt=0)] | None = None
    max_cost: Positive | None = None
    max_retries: Annotated[int, Field(ge=0)] | None = None
    max_depth: Annotated[int, Field(ge=0)] | None = None
    retry_property: str = Field(default="retry", min_length=1)
    depth_property: str = Field(default="depth", min_length=1)


class Dunning(Frozen):
    """After an invoice payment fails, quota decisions deny after this many days."""

    deny_after_days: Annotated[int, Field(ge=0)] = 7


class BillingSpec(Frozen):
    """``advance_fees``: when the fees with ``timing: advance`` are invoiced. ``at_period_end``
    (the default): on the invoice that closes their period, with its usage.
    ``at_period_start``: on an invoice cut when the period starts (the subscription's first
    period: an opening invoice; later periods: the invoice closing the period before, which
    also bills that period's arrears). See ``billing.invoicing.advance``."""

    interval: Literal["month", "year"] = "month"
    anchor: Literal["calendar", "anniversary"] = "calendar"
    advance_fees: Literal["at_period_end", "at_period_start"] = "at_period_end"

    @property
    def in_advance(self) -> bool:
        return self.advance_fees == "at_period_start"


# ---------------------------------------------------------------------------- plan

class Plan(Frozen):
    plan: Key
    version: Annotated[int, Field(ge=1)] = 1
    name: str
    description: str = ""
    effective_from: datetime
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    billing: BillingSpec = Field(default_factory=BillingSpec)
    trial_days: Annotated[int, Field(ge=0)] = 0
    fees: tuple[Fee, ...] = ()
    meters: tuple[Meter, ...] = ()
    charges: tuple[UsageCharge, ...] = ()
    credits: tuple[RecurringCredit, ...] = ()
    minimum_commitment: MinimumCommitment | None = None
    spend_cap: Money | None = None
    budget_alerts: BudgetAlerts | None = None
    agent_limits: AgentLimits | None = None
    cost_guard: CostGuard | None = None  # provider-cost guardrails (billing.catalog.guards)
    overhead: Overhead | None = None  # fixed monthly cost per seat / user (billing.catalog.overhead)
    dunning: Dunning = Field(default_factory=Dunning)
    features: dict[Key, FeatureValue] = Field(default_factory=dict)  # entitlements
    # threshold invoicing: an invoice is cut whenever the usage accrued since the period's
    # last invoice reaches this amount (``billing.invoicing.thresholds``); at least the
    # currency's minor unit (``checks.threshold_problems``)
    invoice_when_due_reaches: Positive | None = None

    @field_validator("effective_from")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("effective_from must include a timezone (e.g. 2026-01-01T00:00:00Z)")
        return value

    @property
    def ref(self) -> str:
        return f"{self.plan}@v{self.version}"

    @cached_property
    def compiled(self) -> CompiledPlan:
        """This version compiled once (``billing.catalog.compiled``), kept on the object: a
        plain attribute read after the first (the quota check reads it on every call)."""
        from billing.catalog.compiled import compile_plan

        return compile_plan(self)

    def model_copy(self, *, update=None, deep: bool = False):
        """A copy compiles itself: it may differ (``update``) from the plan compiled here."""
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("compiled", None)
        return copy

    def __getstate__(self) -> dict:
        """Pickled without its compiled form (compiled again on first use)."""
        state = super().__getstate__()
        state["__dict__"] = {k: v for k, v in state["__dict__"].items() if k != "compiled"}
        return state

    def meter(self, key: str) -> Meter:
        return self.compiled.meter_by_key[key]

    def charge(self, key: str) -> UsageCharge:
        return self.compiled.charge_by_key[key].charge

    @property
    def event_types(self) -> frozenset[str]:
        """Every type a meter counts, and the dispute types of outcome meters."""
        return self.compiled.event_types
