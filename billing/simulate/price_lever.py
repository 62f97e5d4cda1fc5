"""Price levers: the one number of a plan that ``billing advise`` solves for.

A lever names a value of a plan version and which way revenue moves with it:

- ``fee:<key>`` (also written ``flat_fee:<key>``): a recurring fee's ``amount`` (flat) or
  ``unit_price`` (per seat);
- ``unit_price:<charge>``: a ``per_unit`` charge's ``unit_price`` or a ``package`` charge's
  ``package_price``;
- ``overage:<charge>``: the price of the units past the included ones -- a ``per_unit``
  charge's ``unit_price``, a ``package`` charge's ``package_price``, the unbounded last tier's
  ``unit_price`` of a ``graduated`` / ``volume`` charge, or the slow tier's ``unit_price`` of
  a ``downgrade`` charge;
- ``included:<charge>``: the charge's included units (``per_seat`` when the plan gives
  them per seat, else ``pooled``).

Revenue is non-decreasing in a fee or a price, non-increasing in the included units
(``increasing``). ``with_value`` returns the plan version with the value replaced -- the
same plan ref, so meter totals aggregated for the plan still apply -- and nothing else
changed. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from billing.catalog.schema import (
    BlockPolicy, FlatFee, GraduatedPrice, Included, PackagePrice, PerUnitPrice, Plan, SlowTierPolicy, UsageCharge,
    VolumePrice)

KINDS = ("fee", "unit_price", "overage", "included")
ALIASES = {"flat_fee": "fee"}


class LeverError(ValueError):
    """A lever the plan does not have (the message names what it has)."""


@dataclass(frozen=True)
class Lever:
    kind: str  # one of KINDS
    key: str  # the fee or charge key

    @property
    def increasing(self) -> bool:
        """Revenue grows with the value (a price); False: it falls (included units)."""
        return self.kind != "included"

    @property
    def is_money(self) -> bool:
        return self.kind != "included"

    def __str__(self) -> str:
        return f"{self.kind}:{self.key}"


def parse_lever(text: str, plan: Plan) -> Lever:
    """``kind:key`` checked against the plan (raises LeverError naming what the plan has)."""
    kind, sep, key = text.strip().partition(":")
    kind = ALIASES.get(kind, kind)
    if not sep or kind not in KINDS or not key:
        raise LeverError(f"{text!r}: write one of fee:<fee key>, unit_price:<charge key>, overage:<charge key>, "
                         f"included:<charge key>")
    lever = Lever(kind, key)
    current_value(plan, lever)  # raises when the plan has no such value
    return lever


def default_lever(plan: Plan) -> Lever:
    """The plan's first recurring fee (flat or per seat)."""
    if not plan.fees:
        raise LeverError(f"plan {plan.ref} has no recurring fee to solve for: pass --solve "
                         f"unit_price:<charge>, overage:<charge> or included:<charge> "
                         f"(its charges: {_keys(plan.charges)})")
    return Lever("fee", plan.fees[0].key)


def current_value(plan: Plan, lever: Lever) -> Decimal:
    """The lever's value in the plan as written."""
    if lever.kind == "fee":
        fee = _fee(plan, lever.key)
        return fee.amount if isinstance(fee, FlatFee) else fee.unit_price
    charge = _charge(plan, lever.key)
    if lever.kind == "included":
        inc = charge.included or Included()
        return inc.per_seat if inc.per_seat > 0 else inc.pooled
    if lever.kind == "unit_price":
        price = _unit_priced(charge)
        return price.unit_price if isinstance(price, PerUnitPrice) else price.package_price
    return _overage_value(charge)


def with_value(plan: Plan, lever: Lever, value: Decimal) -> Plan:
    """The plan version with the lever's value replaced (same plan and version: same ref)."""
    if value < 0:
        raise LeverError(f"{lever}: a value below 0 ({value})")
    if lever.kind == "fee":
        fee = _fee(plan, lever.key)
        new = fee.model_copy(update={"amount" if isinstance(fee, FlatFee) else "unit_price": value})
        return plan.model_copy(update={"fees": tuple(new if f.key == fee.key else f for f in plan.fees)})
    charge = _charge(plan, lever.key)
    if lever.kind == "included":
        inc = charge.included or Included()
        field = "per_seat" if inc.per_seat > 0 else "pooled"
        new_charge = charge.model_copy(update={"included": inc.model_copy(update={field: value})})
    elif lever.kind == "unit_price" or not isinstance(charge.on_exhaustion, SlowTierPolicy):
        price = _unit_priced(charge) if lever.kind == "unit_price" else _overage_priced(charge)
        new_charge = charge.model_copy(update={"price": _price_with(price, value)})
    else:
        policy = charge.on_exhaustion.model_copy(update={"unit_price": value})
        new_charge = charge.model_copy(update={"on_exhaustion": policy})
    return plan.model_copy(update={"charges": tuple(new_charge if c.key == charge.key else c for c in plan.charges)})


# ------------------------------------------------------------------------------ helpers

def _price_with(price, value: Decimal):
    if isinstance(price, PerUnitPrice):
        return price.model_copy(update={"unit_price": value})
    if isinstance(price, PackagePrice):
        return price.model_copy(update={"package_price": value})
    last = price.tiers[-1].model_copy(update={"unit_price": value})  # graduated / volume: the unbounded tier
    return price.model_copy(update={"tiers": [*price.tiers[:-1], last]})


def _unit_priced(charge: UsageCharge):
    price = charge.price
    if not isinstance(price, (PerUnitPrice, PackagePrice)):
        model = price.model if price is not None else "no price"
        raise LeverError(f"charge {charge.key!r} is priced {model}, not per_unit or package: solve "
                         f"overage:{charge.key} (graduated / volume: its last tier) or a fee instead")
    return price


def _overage_priced(charge: UsageCharge):
    price = charge.price
    if isinstance(price, (PerUnitPrice, PackagePrice, GraduatedPrice, VolumePrice)):
        return price
    model = price.model if price is not None else "no price"
    raise LeverError(f"charge {charge.key!r} is priced {model}: overage:<charge> needs a per_unit, package, "
                     "graduated or volume price, or a downgrade policy with a slow-tier price")


def _overage_value(charge: UsageCharge) -> Decimal:
    policy = charge.on_exhaustion
    if isinstance(policy, BlockPolicy):
        raise LeverError(f"charge {charge.key!r} blocks past its included units: it has no overage to price")
    if isinstance(policy, SlowTierPolicy):
        return policy.unit_price
    price = _overage_priced(charge)
    if isinstance(price, PerUnitPrice):
        return price.unit_price
    if isinstance(price, PackagePrice):
        return price.package_price
    return price.tiers[-1].unit_price


def _fee(plan: Plan, key: str):
    for fee in plan.fees:
        if fee.key == key:
            return fee
    raise LeverError(f"plan {plan.ref} has no fee {key!r} (its fees: {_keys(plan.fees)})")


def _charge(plan: Plan, key: str) -> UsageCharge:
    for charge in plan.charges:
        if charge.key == key:
            return charge
    raise LeverError(f"plan {plan.ref} has no charge {key!r} (its charges: {_keys(plan.charges)})")


def _keys(items) -> str:
    return ", ".join(i.key for i in items) or "none"
