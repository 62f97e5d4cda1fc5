"""Checks on a plan document that its schema cannot express: cross-references (a charge
naming an unknown meter, credits naming unknown charges), duplicate keys (in a list of
meters/charges/fees, or a YAML key written twice), tier order, and fields a plan would
otherwise silently ignore. Each problem comes with its path in the document."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import yaml

from billing.catalog.schema import VALUE_AGGREGATIONS


def duplicate_keys(node: yaml.Node | None, parts: list[Any] | None = None) -> list[tuple[list[Any], str, int]]:
    """Every key written twice in one mapping (YAML keeps the last silently): path, message, line."""
    parts = parts or []
    found: list[tuple[list[Any], str, int]] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name in first:
                found.append(([*parts, name], f"key {name!r} appears twice in this mapping "
                               f"(first on line {first[name]}); YAML would keep only the last",
                               key.start_mark.line + 1))
            elif name is not None:
                first[name] = key.start_mark.line + 1
            found.extend(duplicate_keys(value, [*parts, name]))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found.extend(duplicate_keys(item, [*parts, i]))
    return found


def semantic_problems(data: dict) -> list[tuple[list[Any], str]]:
    meters = data.get("meters") or []
    charges = data.get("charges") or []
    fees = data.get("fees") or []
    problems = _repeated_item_keys(meters, charges, fees)
    problems.extend(_meter_problems(meters))
    problems.extend(_charge_problems(charges, meters))
    limits = data.get("agent_limits")
    limit_keys = ("max_steps", "max_tokens", "max_cost", "max_retries", "max_depth")
    if isinstance(limits, dict) and all(limits.get(k) is None for k in limit_keys):
        problems.append((["agent_limits"], f"set at least one of {', '.join(limit_keys)}"))
    guard = data.get("cost_guard")
    if isinstance(guard, dict) and guard.get("task_cost") is not None and not isinstance(limits, dict):
        problems.append((["cost_guard", "task_cost"], "a task cost guard needs agent_limits "
                         "(its task_property names the task a call belongs to)"))
    problems.extend(_credit_problems(data.get("credits") or [], charges))
    problems.extend(_feature_problems(data.get("features"), meters, charges))
    problems.extend(threshold_problems(data))
    return problems


def _feature_problems(features: Any, meters: Any, charges: Any) -> list[tuple[list[Any], str]]:
    """A metered feature names a meter or charge of the plan (the quota decision on it)."""
    if not isinstance(features, dict):
        return []
    keys = {item.get("key") for items in (meters, charges) if isinstance(items, list)
            for item in items if isinstance(item, dict)}
    problems: list[tuple[list[Any], str]] = []
    for name, value in features.items():
        if isinstance(value, dict) and "metered" in value and value["metered"] not in keys:
            problems.append((["features", name, "metered"], f"unknown meter or charge {value['metered']!r}; "
                             f"defined: {sorted(k for k in keys if isinstance(k, str))}"))
    return problems


def threshold_problems(data: dict) -> list[tuple[list[Any], str]]:
    """``invoice_when_due_reaches``: a positive amount of at least the currency's minor unit
    (below it, every rated cent would cut an invoice: never a silent default)."""
    from billing.money import threshold_problem

    value = _number(data.get("invoice_when_due_reaches"))
    currency = data.get("currency", "USD")
    if value is None or value <= 0 or not isinstance(currency, str):
        return []  # absent, not a number, or not positive: the schema reports it
    problem = threshold_problem(value, currency)
    if problem and value < 1:
        problem += f", got {data.get('invoice_when_due_reaches')}"
    return [(["invoice_when_due_reaches"], problem)] if problem else []


def _repeated_item_keys(meters: Any, charges: Any, fees: Any) -> list[tuple[list[Any], str]]:
    problems: list[tuple[list[Any], str]] = []
    for section, items in (("meters", meters), ("charges", charges), ("fees", fees)):
        seen: set = set()
        for i, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, dict) and item.get("key") in seen:
                problems.append(([section, i, "key"], f"duplicate key {item.get('key')!r}"))
            if isinstance(item, dict):
                seen.add(item.get("key"))
    return problems


def _meter_problems(meters: Any) -> list[tuple[list[Any], str]]:
    problems: list[tuple[list[Any], str]] = []
    for i, meter in enumerate(meters if isinstance(meters, list) else []):
        if not isinstance(meter, dict):
            continue
        agg = meter.get("aggregation", "count")
        if agg in ("sum", "max", "unique_count", *VALUE_AGGREGATIONS) and not meter.get("property"):
            problems.append(([("meters"), i, "aggregation"], f"aggregation {agg!r} needs a 'property'"))
        if agg == "time_weighted_sum" and meter.get("time_unit") is None:
            problems.append((["meters", i, "time_unit"], "a time_weighted_sum meter needs a time_unit "
                             "(second, minute, hour or day): level x time held is summed in it"))
        if agg != "time_weighted_sum" and meter.get("time_unit") is not None:
            problems.append((["meters", i, "time_unit"], "time_unit applies to time_weighted_sum meters only"))
        if agg in VALUE_AGGREGATIONS and meter.get("multipliers") is not None:
            problems.append((["meters", i, "multipliers"], f"multipliers do not apply to {agg} meters"))
        if meter.get("disputes") is not None and agg not in ("count", "unique_count"):
            problems.append((["meters", i, "disputes"], "disputes apply to count and unique_count meters only"))
        if agg == "count" and meter.get("property"):
            problems.append((["meters", i, "property"], "a count meter counts events and ignores 'property' "
                             "(use aggregation: sum, max or unique_count to measure it)"))
        if agg == "unique_count" and meter.get("multipliers") is not None:
            problems.append((["meters", i, "multipliers"], "multipliers do not apply to unique_count meters"))
    return problems


def _charge_problems(charges: Any, meters: Any) -> list[tuple[list[Any], str]]:
    meter_keys = {m.get("key") for m in meters if isinstance(m, dict)}
    problems: list[tuple[list[Any], str]] = []
    for i, charge in enumerate(charges if isinstance(charges, list) else []):
        if not isinstance(charge, dict):
            continue
        price_doc = charge.get("price")
        if isinstance(price_doc, dict) and isinstance(price_doc.get("tiers"), list):
            problems.extend((["charges", i, "price", "tiers", *where], msg)
                            for where, msg in _tier_problems(price_doc["tiers"]))
            problems.extend((["charges", i, "price", "tiers", *where], msg)
                            for where, msg in _block_problems(price_doc))
        if charge.get("meter") not in meter_keys:
            problems.append((["charges", i, "meter"],
                             f"unknown meter {charge.get('meter')!r}; defined: {sorted(k for k in meter_keys if k)}"))
        exhaustion = charge.get("on_exhaustion") or {}  # absent: overage, the default policy
        policy = exhaustion.get("policy", "overage") if isinstance(exhaustion, dict) else None
        if policy in ("overage", "rate_limit") and charge.get("price") is None:
            problems.append((["charges", i, "price"], f"policy {policy!r} bills usage past the included units: a price is required"))
        if policy == "downgrade" and charge.get("price") is not None:
            problems.append((["charges", i, "price"], "policy 'downgrade' bills the slow tier at on_exhaustion.unit_price; "
                             "this price would never be used"))
        price = charge.get("price") or {}
        if isinstance(price, dict) and price.get("model") == "percentage":
            problems.extend(_percentage_problems(i, charge, price, meters))
        if isinstance(price, dict) and price.get("model") == "capacity":
            problems.extend(_capacity_problems(i, charge, price, meters))
        if isinstance(price, dict) and price.get("model") == "dimension":
            problems.extend(_dimension_problems(i, charge, price, meters, charges))
    return problems


def _dimension_problems(i: int, charge: dict, price: dict, meters: Any, charges: list) -> list[tuple[list[Any], str]]:
    """Charge ``i``'s dimension price: its values' tiers in order, a plain count / sum meter,
    and one property per meter (its per-value totals are split by one property)."""
    problems: list[tuple[list[Any], str]] = []
    inner = [(["prices", value], p) for value, p in (price.get("prices") or {}).items()] \
        if isinstance(price.get("prices"), dict) else []
    for where, p in [*inner, (["default"], price.get("default"))]:
        if isinstance(p, dict) and isinstance(p.get("tiers"), list):
            problems.extend((["charges", i, "price", *where, "tiers", *at], msg)
                            for at, msg in _tier_problems(p["tiers"]))
    meter = next((m for m in meters if isinstance(m, dict) and m.get("key") == charge.get("meter")), None)
    if meter is None:
        return problems
    if meter.get("aggregation", "count") not in ("count", "sum"):
        problems.append((["charges", i, "price", "model"], "a dimension price splits its meter's units by value: "
                         f"meter {charge.get('meter')!r} must count or sum (aggregation: count or sum)"))
    for field in ("multipliers", "disputes"):
        if meter.get(field) is not None:
            problems.append((["charges", i, "price", "model"], f"a dimension price's meter takes no {field} "
                             f"(meter {charge.get('meter')!r} has them)"))
    for j, other in enumerate(charges[:i]):
        other_price = other.get("price") if isinstance(other, dict) else None
        if isinstance(other_price, dict) and other_price.get("model") == "dimension" \
                and other.get("meter") == charge.get("meter") and other_price.get("property") != price.get("property") \
                and None not in (other_price.get("property"), price.get("property")):  # (a missing one: reported)
            problems.append((["charges", i, "price", "property"], f"charge {j} splits meter {charge.get('meter')!r} "
                             f"by {other_price.get('property')!r}: a meter is split by one property"))
    return problems


def _percentage_problems(i: int, charge: dict, price: dict, meters: Any) -> list[tuple[list[Any], str]]:
    """Charge ``i``'s percentage price: its bounds in order, no ``included``, a summing meter."""
    problems: list[tuple[list[Any], str]] = []
    lo, hi = price.get("min_per_transaction"), price.get("max_per_transaction")
    try:
        if lo is not None and hi is not None and Decimal(str(lo)) > Decimal(str(hi)):
            problems.append((["charges", i, "price", "max_per_transaction"],
                             "max_per_transaction must be >= min_per_transaction"))
    except ArithmeticError:
        pass  # pydantic reports the bad number
    if charge.get("included") is not None:
        problems.append((["charges", i, "included"], "percentage prices use free_units/free_amount, not included"))
    meters_by_key = {m.get("key"): m for m in meters if isinstance(m, dict)}
    meter = meters_by_key.get(charge.get("meter"))
    if meter is not None and meter.get("aggregation", "count") != "sum":
        problems.append((["charges", i, "price", "model"], "a percentage price takes a share of transaction "
                         f"amounts: its meter {charge.get('meter')!r} must sum them (aggregation: sum)"))
    return problems


def _credit_problems(credits: Any, charges: Any) -> list[tuple[list[Any], str]]:
    charge_keys = {c.get("key") for c in charges if isinstance(c, dict)}
    problems: list[tuple[list[Any], str]] = []
    for i, credit in enumerate(credits):
        if isinstance(credit, dict):
            for j, key in enumerate(credit.get("applies_to") or []):
                if key not in charge_keys:
                    problems.append((["credits", i, "applies_to", j], f"unknown charge {key!r}"))
    return problems


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
        return None
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return None
    return number if number.is_finite() else None


def _tier_problems(tiers: list) -> list[tuple[list[Any], str]]:
    """The tier-ordering rules of ``schema._check_tiers``, each reported at its own
    ``tiers[i].up_to`` (pydantic can only point at the whole list)."""
    problems: list[tuple[list[Any], str]] = []
    up_tos = [t.get("up_to") if isinstance(t, dict) else None for t in tiers]
    for i, up_to in enumerate(up_tos[:-1]):
        if up_to is None:
            problems.append(([i, "up_to"], "only the last tier may be unbounded (up_to: null)"))
            continue
        current, following = _number(up_to), _number(up_tos[i + 1])
        if current is not None and following is not None and following <= current:
            problems.append(([i + 1, "up_to"], f"up_to must be greater than {up_to} (the previous tier's)"))
    if up_tos and up_tos[-1] is not None and isinstance(tiers[-1], dict):
        problems.append(([len(tiers) - 1, "up_to"], "the last tier must be unbounded (up_to: null)"))
    return problems


def _block_problems(price: dict) -> list[tuple[list[Any], str]]:
    """A tiered price with ``block_size``: every bounded tier ends on a whole block (tier
    limits are in units; a block straddling two tiers would have no one price); with
    ``flat_fee_at_zero``: a first tier with a flat fee to bill."""
    problems: list[tuple[list[Any], str]] = []
    first = price["tiers"][0] if price["tiers"] else None
    if price.get("flat_fee_at_zero") is True and isinstance(first, dict) and not _number(first.get("flat_fee")):
        problems.append(([0, "flat_fee"], "flat_fee_at_zero bills the first tier's flat fee at zero usage: "
                         "set a flat_fee on the first tier (or drop flat_fee_at_zero)"))
    block = _number(price.get("block_size"))
    if block is None or block <= 0:
        return problems  # absent, or pydantic reports the bad number
    for i, tier in enumerate(price["tiers"]):
        up_to = _number(tier.get("up_to")) if isinstance(tier, dict) else None
        if up_to is not None and up_to % block != 0:
            problems.append(([i, "up_to"], f"up_to {tier.get('up_to')} is not a whole number of blocks of "
                             f"{price.get('block_size')} units (block_size): a block would straddle two tiers"))
    return problems


def _capacity_problems(i: int, charge: dict, price: dict, meters: Any) -> list[tuple[list[Any], str]]:
    """Charge ``i``'s capacity price: its meters exist and are ``max`` meters (a capacity
    reads period peaks), the charge's own meter is one of them, no ``included``, and its
    tiers each bound every meter, in order, the last one unbounded."""
    at = ["charges", i, "price"]
    problems: list[tuple[list[Any], str]] = []
    meters_by_key = {m.get("key"): m for m in meters if isinstance(m, dict)}
    names = price.get("meters") if isinstance(price.get("meters"), list) else []
    for j, key in enumerate(names):
        meter = meters_by_key.get(key)
        if meter is None:
            problems.append(([*at, "meters", j], f"unknown meter {key!r}; defined: "
                             f"{sorted(k for k in meters_by_key if isinstance(k, str))}"))
        elif meter.get("aggregation", "count") != "max":
            problems.append(([*at, "meters", j], f"a capacity price reads period peaks: meter {key!r} "
                             "must be aggregation: max"))
        if key in names[:j]:
            problems.append(([*at, "meters", j], f"meter {key!r} is named twice"))
    if names and charge.get("meter") not in names:
        problems.append((["charges", i, "meter"], f"a capacity price reads meters {names}: the charge's meter "
                         "must be one of them"))
    if charge.get("included") is not None:
        problems.append((["charges", i, "included"], "a capacity price bills a tier's flat amount: included "
                         "units do not apply"))
    tiers = price.get("tiers") if isinstance(price.get("tiers"), list) else []
    previous: dict | None = None
    for j, tier in enumerate(tiers):
        if not isinstance(tier, dict):
            continue
        where = [*at, "tiers", j, "up_to"]
        limits = tier.get("up_to")
        if limits is None:
            if j < len(tiers) - 1:
                problems.append((where, "only the last tier may be unbounded (up_to: null)"))
            continue
        if j == len(tiers) - 1:
            problems.append((where, "the last tier must be unbounded (up_to: null)"))
        if not isinstance(limits, dict):
            continue
        for key in limits:
            if key not in names:
                problems.append(([*where, key], f"{key!r} is not one of the price's meters {names}"))
        missing = [key for key in names if key not in limits]
        if missing:
            problems.append((where, f"every bounded tier limits every meter of the price: missing {missing}"))
        if previous is not None:
            problems.extend(_capacity_order(where, j, names, previous, limits))
        previous = limits
    return problems


def _capacity_order(where: list[Any], j: int, names: list, previous: dict, limits: dict) -> list[tuple[list[Any], str]]:
    """Tier ``j`` of a capacity price is no smaller than tier ``j - 1`` in any meter and
    larger in one (the lowest tier that fits is then well defined)."""
    problems: list[tuple[list[Any], str]] = []
    grew = False
    for key in names:
        now, before = _number(limits.get(key)), _number(previous.get(key))
        if now is None or before is None:
            return problems  # missing or not a number: reported on its own
        if now < before:
            problems.append(([*where, key], f"up_to must be at least {previous.get(key)} (tier {j - 1}'s): "
                             "capacity tiers are ordered"))
        grew = grew or now > before
    if not grew and not problems:
        problems.append((where, f"the tier must allow more than tier {j - 1} for at least one meter: "
                         "capacity tiers are ordered"))
    return problems
