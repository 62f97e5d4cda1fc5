"""A plan version compiled once into the lookups every consumer needs (pure).

``Plan.compiled`` builds it the first time it is asked for and keeps it on the plan object
(the catalog compiles every version it loads up front), so the rating engine, the quota
decision, alerts, forecasts and the simulation share one object per plan version instead
of each keeping its own cache keyed by ``id(plan)``.

What it holds, all derived from the plan and never changed afterwards:

* meters by key and by event type; charges by key and by meter, in plan order (a
  capacity charge under each meter whose peak picks its tier);
* per charge (``CompiledCharge``) the facts the charge arithmetic
  (``billing.rating.arithmetic``) branches on: its exhaustion policy, the slow tier's or
  the per-unit price, its spend cap, whether it prices transactions one by one;
* what a quota request may name: a charge key (wins) or a meter key, resolved to the
  meter and the charges deciding it;
* which meters some charge prices, which need per-event values (percentage prices with
  per-transaction rules) or the events themselves (disputes, unique counts), and whether
  any charge is rate limited.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from billing.catalog.schema import (
    BlockPolicy, CapacityPrice, DimensionPrice, Included, Meter, PercentagePrice, PerUnitPrice, RateLimit,
    RateLimitPolicy, SlowTierPolicy, VALUE_AGGREGATIONS, UsageCharge, VolumePrice)
from billing.money import round_line

if TYPE_CHECKING:
    from billing.catalog.schema import Plan


@dataclass(frozen=True, slots=True)
class CompiledCharge:
    """One usage charge with the facts its arithmetic needs, looked up once."""

    charge: UsageCharge
    index: int  # position in the plan
    key: str
    name: str  # display name (the key when the plan gives none)
    meter: str
    included: Included | None
    policy: Any  # the exhaustion policy (block / downgrade / rate_limit / overage)
    price: Any  # the price model, None under a downgrade policy
    slow_price: Decimal | None  # downgrade: what a unit past the included ones costs
    unit_price: Decimal | None  # per_unit price (priced inline by the arithmetic)
    linear_price: Decimal | None  # the slow tier's or the per_unit price: amount = units past included x it
    spend_cap: Decimal | None  # the overage policy's cap on this charge's amount, as written
    cap_line: Decimal | None  # that cap rounded to the currency: the most the charge's lines add up to
    rate_limit: RateLimit | None
    throttles: bool  # block / downgrade / rate_limit: usage past the included units is throttled
    per_transaction: bool  # a percentage price with per-transaction rules: needs each event's value
    volume_ends: tuple[Decimal, ...]  # volume prices: the bounded tiers' up_to (where the amount can drop)
    by_value: str | None  # a dimension price: the property whose values it prices (needs per-value totals)
    # a capacity price: the meters whose period peaks pick its tier, in the price's order
    # (the charge's own meter among them); () for every other price
    capacity_meters: tuple[str, ...] = ()

    @property
    def meters(self) -> tuple[str, ...]:
        """Every meter the charge's amount reads: its own, or a capacity price's meters."""
        return self.capacity_meters or (self.meter,)


def compile_charge(charge: UsageCharge, index: int, currency: str) -> CompiledCharge:
    policy = charge.on_exhaustion
    slow = isinstance(policy, SlowTierPolicy)
    price = None if slow else charge.price
    cap = getattr(policy, "spend_cap", None)
    return CompiledCharge(
        charge=charge, index=index, key=charge.key, name=charge.name or charge.key, meter=charge.meter,
        included=charge.included, policy=policy, price=price,
        slow_price=policy.unit_price if slow else None,
        unit_price=price.unit_price if isinstance(price, PerUnitPrice) else None,
        linear_price=policy.unit_price if slow else price.unit_price if isinstance(price, PerUnitPrice) else None,
        spend_cap=cap, cap_line=None if cap is None else round_line(cap, currency),
        rate_limit=getattr(policy, "rate_limit", None),
        throttles=isinstance(policy, (BlockPolicy, SlowTierPolicy, RateLimitPolicy)),
        per_transaction=isinstance(price, PercentagePrice) and price.per_transaction,
        volume_ends=tuple(t.up_to for t in price.tiers if t.up_to is not None)
        if isinstance(price, VolumePrice) else (),
        by_value=price.property if isinstance(price, DimensionPrice) else None,
        capacity_meters=tuple(price.meters) if isinstance(price, CapacityPrice) else ())


@dataclass(frozen=True, slots=True, eq=False)
class CompiledPlan:
    plan: Plan
    currency: str
    spend_cap_line: Decimal | None  # the plan's spend cap rounded to the currency
    charges: tuple[CompiledCharge, ...]
    charge_by_key: MappingProxyType  # charge key -> CompiledCharge
    charges_by_meter: MappingProxyType  # meter key -> its charges, in plan order
    meter_by_key: MappingProxyType  # meter key -> Meter
    meters_by_event_type: MappingProxyType  # event type -> its meters, in plan order
    requests: MappingProxyType  # quota request key -> (meter key, charges deciding it)
    charged_meters: frozenset[str]
    transaction_meters: frozenset[str]  # meters some per-transaction charge prices
    group_meters: MappingProxyType  # meter key -> the property a dimension price splits it by
    # charged meters whose rated value needs the events themselves, not a running total: an
    # outcome counts only if not disputed in its window, distinct values, per-transaction
    # sums, the value aggregations (latest, min, avg, time_weighted_sum: no counter) and
    # the meters a dimension price splits by value (a counter holds only their total)
    event_read_meters: tuple[Meter, ...]
    event_types: frozenset[str]  # metered types and the dispute types of outcome meters
    has_rate_limits: bool
    has_credits: bool
    # values derived from the plan on first use (``billing.rating.arithmetic`` keeps the
    # included units per seat count here); never part of what the plan says
    memo: dict = field(default_factory=dict, repr=False)

    def __reduce__(self):  # mapping proxies do not pickle: a copy compiles the plan again
        return compile_plan, (self.plan,)

    def __deepcopy__(self, memo: dict) -> CompiledPlan:  # immutable: a deep copy of its plan shares it
        return self

    def charge(self, key: str) -> CompiledCharge:
        return self.charge_by_key[key]

    def meter(self, key: str) -> Meter:
        return self.meter_by_key[key]


def compile_plan(plan: Plan) -> CompiledPlan:
    charges = tuple(compile_charge(c, i, plan.currency) for i, c in enumerate(plan.charges))
    by_meter: dict[str, list[CompiledCharge]] = {}
    for c in charges:  # a capacity charge is decided by (and reads) each of its meters
        for key in c.meters:
            by_meter.setdefault(key, []).append(c)
    by_type: dict[str, list[Meter]] = {}
    for m in plan.meters:
        by_type.setdefault(m.event_type, []).append(m)
    requests: dict[str, tuple[str, tuple[CompiledCharge, ...]]] = {}
    for m in plan.meters:
        requests.setdefault(m.key, (m.key, tuple(by_meter.get(m.key, ()))))
    for c in reversed(charges):  # a charge key wins over a meter key; the first charge of a key wins
        requests[c.key] = (c.meter, (c,))
    types = {m.event_type for m in plan.meters}
    for m in plan.meters:
        if m.disputes:
            types.update(m.disputes.dispute_types)
    return CompiledPlan(
        plan=plan, currency=plan.currency, charges=charges,
        spend_cap_line=None if plan.spend_cap is None else round_line(plan.spend_cap, plan.currency),
        charge_by_key=MappingProxyType({c.key: c for c in reversed(charges)}),
        charges_by_meter=MappingProxyType({k: tuple(v) for k, v in by_meter.items()}),
        meter_by_key=MappingProxyType({m.key: m for m in reversed(plan.meters)}),
        meters_by_event_type=MappingProxyType({k: tuple(v) for k, v in by_type.items()}),
        requests=MappingProxyType(requests),
        charged_meters=frozenset(key for c in charges for key in c.meters),
        transaction_meters=frozenset(c.meter for c in charges if c.per_transaction),
        group_meters=MappingProxyType({c.meter: c.by_value for c in reversed(charges) if c.by_value}),
        event_read_meters=tuple(m for m in plan.meters if m.key in by_meter and (
            m.disputes is not None or m.aggregation == "unique_count" or m.aggregation in VALUE_AGGREGATIONS
            or any(c.by_value for c in by_meter[m.key])
            or any(c.per_transaction for c in by_meter[m.key]))),
        event_types=frozenset(types),
        has_rate_limits=any(c.rate_limit is not None for c in charges) or (
            plan.cost_guard is not None and plan.cost_guard.rate_limited()),
        has_credits=bool(plan.credits))
