"""A contract's dated overrides of a plan version, and the effective plan they give (pure).

An override replaces one value of the plan version a subscription is on, for a time:

* ``path``: where, segments separated by ``/`` (plan keys may contain dots):
  ``charges/<key>/price`` (or deeper: ``charges/<key>/price/unit_price``,
  ``charges/<key>/price/tiers/1/unit_price``), ``charges/<key>/included``,
  ``charges/<key>/on_exhaustion`` (``.../on_exhaustion/spend_cap``),
  ``fees/<key>/amount`` | ``unit_price`` | ``min_seats``, ``credits/<key>/amount`` |
  ``per_seat`` | ``applies_to``, ``spend_cap``, ``minimum_commitment``, ``features/<name>``
  (an entitlement: granted, changed, or withdrawn with ``false``; the entitlement check reads
  the effective plan of the quota context, so it answers with the contract's value);
* ``value``: the new value, written as in a plan file (JSON: numbers as strings keep
  their exact decimals);
* ``[starts_at, ends_at)``: when it is in force (``ends_at`` None: until further notice).

Meters, the billing cycle, the currency and the plan's identity cannot be overridden: the
ledger's counters aggregate a subscription's meters as the plan version defines them.

``effective_plan(plan, overrides, at)`` is the plan version with every override in force
at ``at`` applied, validated by the plan files' own validator
(``loader.plan_from_data``); the charges, fees and credits an override changed are named
``<name> (contract)`` so the invoice shows which lines the contract priced. Rating applies
the overrides in force at a window's start to the whole window (the period's start, or the
subscription's start if later): an override dated inside a period takes effect at the next
period (``billing.invoicing.windows`` and the quota context resolve it the same way).

``override_problems`` is what a contract is checked with before it is stored: every
problem as ``overrides[i].<field>: message`` (unknown charge, fee or credit; a path that
cannot be overridden; a value the plan validator refuses; dates out of order; two
overrides of the same value, or of a value and a part of it, in force at the same time).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from billing.catalog.loader import PlanInvalid, plan_from_data
from billing.catalog.schema import Plan

# collections addressed by their items' keys -> the fields of an item that may be overridden
OVERRIDABLE_ITEMS: dict[str, tuple[str, ...]] = {
    "charges": ("price", "included", "on_exhaustion"),
    "fees": ("amount", "unit_price", "min_seats"),
    "credits": ("amount", "per_seat", "applies_to"),
}
OVERRIDABLE_PLAN_FIELDS = ("spend_cap", "minimum_commitment", "features")
MAX_PATH_LENGTH = 300
CONTRACT_MARK = " (contract)"


@dataclass(frozen=True)
class Override:
    path: str
    value: Any  # JSON: str / int / bool / None / list / dict
    starts_at: datetime
    ends_at: datetime | None = None

    def in_force(self, at: datetime) -> bool:
        return self.starts_at <= at and (self.ends_at is None or at < self.ends_at)

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/"))


class OverrideError(ValueError):
    """One override that cannot apply to the plan (the message names what is wrong)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def path_problem(plan: Plan, path: object) -> str | None:
    """Why ``path`` names nothing of ``plan`` that may be overridden, or None."""
    if not isinstance(path, str) or not 0 < len(path) <= MAX_PATH_LENGTH:
        return f"must be text of 1-{MAX_PATH_LENGTH} characters"
    parts = path.split("/")
    if any(p == "" for p in parts):
        return "has an empty segment (segments are separated by a single '/')"
    head = parts[0]
    if head in OVERRIDABLE_ITEMS:
        items = getattr(plan, head)
        singular = head[:-1]
        if len(parts) < 3:
            return f"must name a {singular} and its field: {head}/<key>/<field>"
        keys = [item.key for item in items]
        if parts[1] not in keys:
            have = ", ".join(keys) or "none"
            return f"plan {plan.ref} has no {singular} {parts[1]!r} (its {head}: {have})"
        if parts[2] not in OVERRIDABLE_ITEMS[head]:
            return (f"{singular} field {parts[2]!r} cannot be overridden (one of: "
                    f"{', '.join(OVERRIDABLE_ITEMS[head])})")
        return None
    if head in OVERRIDABLE_PLAN_FIELDS:
        return None
    return (f"{head!r} cannot be overridden: a path starts with one of "
            f"{', '.join([*OVERRIDABLE_ITEMS, *OVERRIDABLE_PLAN_FIELDS])}")


def _set(data: dict, parts: Sequence[str], value: Any) -> None:
    """Put ``value`` at ``parts`` of a plan document (items of charges/fees/credits by key,
    other lists by index); every segment but the last must exist."""
    node: Any = data
    head = parts[0]
    if head in OVERRIDABLE_ITEMS:
        item = next((item for item in data[head] if item["key"] == parts[1]), None)
        if item is None:  # checked when stored; a plan version edited since would land here
            raise OverrideError("path", f"the plan has no {head[:-1]} {parts[1]!r}")
        node = item
        node_parts = parts[2:]
        item["name"] = (item.get("name") or item["key"]).removesuffix(CONTRACT_MARK) + CONTRACT_MARK
    else:
        node_parts = parts
    for depth, part in enumerate(node_parts):
        last = depth == len(node_parts) - 1
        where = "/".join(parts[: len(parts) - len(node_parts) + depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise OverrideError("path", f"{where}: no item {part} (the list has {len(node)})")
            index = int(part)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            elif node.get(part) is None:
                raise OverrideError("path", f"{where}: the plan has no value here to override a part of; "
                                            f"override the whole {'/'.join(parts[:-1])} instead")
            else:
                node = node[part]
        else:
            raise OverrideError("path", f"{where}: {part!r} is inside a single value")


def _apply(plan: Plan, overrides: Sequence[Override]) -> Plan:
    """``plan`` with ``overrides`` applied and validated (raises OverrideError / PlanInvalid)."""
    data = plan.model_dump(mode="json")
    for o in sorted(overrides, key=lambda o: (len(o.segments), o.path)):  # a whole value before a part of it
        _set(data, o.segments, o.value)
    return plan_from_data(data, f"{plan.ref} with contract overrides")


_CACHE: dict[tuple[int, str], tuple[Plan, Plan]] = {}


def effective_plan(plan: Plan, overrides: Sequence[Override], at: datetime) -> Plan:
    """The plan version with every override in force at ``at`` applied (``plan`` itself when
    none is). Kept per (plan, overrides): a quota decision resolves it on every context load."""
    active = [o for o in overrides if o.in_force(at)]
    if not active:
        return plan
    text = json.dumps(sorted((o.path, o.value) for o in active), default=str, sort_keys=True)
    key = (id(plan), text)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is plan:
        return hit[1]
    result = _apply(plan, active)
    if len(_CACHE) > 1000:
        _CACHE.clear()
    _CACHE[key] = (plan, result)  # the plan is held so that its id is not reused meanwhile
    return result


def _overlap(a: Override, b: Override) -> bool:
    n = min(len(a.segments), len(b.segments))
    if a.segments[:n] != b.segments[:n]:
        return False
    return (a.ends_at is None or b.starts_at < a.ends_at) and (b.ends_at is None or a.starts_at < b.ends_at)


def _window(o: Override) -> str:
    return f"{o.starts_at.isoformat()} .. {o.ends_at.isoformat() if o.ends_at else 'open end'}"


def override_problems(plan: Plan, overrides: Sequence[Override], names: Sequence[str] | None = None) -> list[str]:
    """Every problem of a subscription's overrides of ``plan`` (empty: they may be stored);
    ``names``: how each is named in a problem (default ``overrides[i]``)."""
    names = list(names) if names is not None else [f"overrides[{i}]" for i in range(len(overrides))]
    problems: list[str] = []
    valid: list[bool] = []
    for i, o in enumerate(overrides):
        where = names[i]
        problem = path_problem(plan, o.path)
        if problem:
            problems.append(f"{where}.path: {problem}")
        if o.starts_at.tzinfo is None or (o.ends_at is not None and o.ends_at.tzinfo is None):
            problems.append(f"{where}.starts_at: dates must include a timezone")
            problem = problem or "naive"
        elif o.ends_at is not None and o.ends_at <= o.starts_at:
            problems.append(f"{where}.ends_at: must be after starts_at ({o.starts_at.isoformat()})")
            problem = problem or "dates"
        if not problem:
            problem = _alone_problem(plan, o)
            if problem:
                problems.append(f"{where}.{problem}")
        valid.append(not problem)
    for i, a in enumerate(overrides):
        for j in range(i + 1, len(overrides)):
            b = overrides[j]
            if valid[i] and valid[j] and _overlap(a, b):
                problems.append(f"{names[j]}: overlaps {names[i]}: {b.path} ({_window(b)}) and {a.path} "
                                f"({_window(a)}) would both be in force")
    if not problems:  # each valid alone: every combination in force at some instant must be valid too
        for at in sorted({o.starts_at for o in overrides}):
            try:
                _apply(plan, [o for o in overrides if o.in_force(at)])
            except (OverrideError, PlanInvalid) as exc:
                detail = exc.message if isinstance(exc, OverrideError) else "; ".join(
                    f"{p.path}: {p.message}" for p in exc.problems)
                problems.append(f"overrides in force at {at.isoformat()}: {detail}")
    return problems


def _alone_problem(plan: Plan, o: Override) -> str | None:
    """``field: message`` when ``o`` alone cannot apply to ``plan``."""
    try:
        _apply(plan, [o])
    except OverrideError as exc:
        return f"{exc.field}: {exc.message}"
    except PlanInvalid as exc:
        return "value: " + "; ".join(f"{p.path}: {p.message}" for p in exc.problems)
    return None
