"""Which events one LLM call produces under the customer's plan (pure: no I/O).

From the plan's metering (``GET /v1/customers/{id}/metering``) and the meter or charge the
caller reserves on, one call produces one event per event type the plan counts it under,
each settled by its own reservation (its id is that reservation's id, so a retried commit
is a duplicate, never a double):

1. the *primary* event, of the reserved meter's type (or the caller's ``event_type``);
2. when the plan sums or takes the maximum of a usage property (``input_tokens``,
   ``web_search_requests``, ...) only on another event type, an event of that type: the
   call's usage goes there (reserved on that meter with quantity 0);
3. when the plan counts ``request`` events and no event above is one, a ``request`` event
   (reserved with quantity 1).

The usage (token counts, cost) and the agent task go on exactly ONE event, the *carrier*
(the first of 2. if any, else the primary), so provider cost and task usage count once;
every event carries the model and the caller's properties, so filters and attribution
see them. A meter's filter is evaluated by ``billing.catalog.Meter.matches``, the rule the
ledger applies, on the properties known before the call (a property learned only from the
response, such as a model the caller did not name, is not held against it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from billing.catalog.schema import Meter

# numeric properties ``extract_usage`` records (see billing.client.usage)
USAGE_COUNTS = frozenset({
    "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens",
    "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_write_30m_tokens", "cache_write_12h_tokens",
    "web_search_requests", "web_fetch_requests"})
REQUEST_TYPE = "request"


@dataclass
class Slot:
    """One reservation of the call and the event its commit records."""

    event_type: str | None  # None: the server's default (the meter's type; metering unknown)
    meter: str | None
    charge: str | None
    quantity: Decimal | int | str
    request_id: str
    carries_usage: bool = False
    primary: bool = False
    watched: Meter | None = None  # the meter this event must match (None: not known)
    reservation: dict[str, Any] = field(default_factory=dict)

    @property
    def reservation_id(self) -> str:
        return self.reservation["reservation_id"]


_MATCHED_FIELDS = ("key", "name", "event_type", "aggregation", "property", "filter")


_PARSED: dict[int, tuple[dict[str, Any], tuple[Meter, ...]]] = {}
_PARSED_MAX = 4096


def parse_meters(metering: dict[str, Any] | None) -> tuple[Meter, ...]:
    """The plan's meters as ``billing.catalog`` meters (the fields matching needs; a meter this
    client cannot read, e.g. from a newer server, is left out).

    Remembered per metering object (the client caches a customer's metering, so every call in
    its lifetime reads the same dict, three times a call): the meters and their compiled
    filters are built once, not per call. The entry holds the dict, so its id is not reused
    while remembered; a metering dict is never changed once fetched."""
    if not metering:
        return ()
    hit = _PARSED.get(id(metering))
    if hit is not None and hit[0] is metering:
        return hit[1]
    meters = []
    for raw in metering.get("meters", ()):
        try:
            meters.append(Meter.model_validate({k: raw[k] for k in _MATCHED_FIELDS if k in raw}))
        except (ValueError, TypeError):
            continue
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    parsed = tuple(meters)
    _PARSED[id(metering)] = (metering, parsed)
    return parsed


def reserved_meter(metering: dict[str, Any] | None, meter: str | None, charge: str | None) -> Meter | None:
    """The meter a reservation on ``meter`` or ``charge`` holds units of (None: unknown)."""
    if metering is None:
        return None
    key = meter
    if charge is not None:
        key = next((c["meter"] for c in metering.get("charges", ()) if c["key"] == charge), None)
    return next((m for m in parse_meters(metering) if m.key == key), None)


def could_match(meter: Meter, event_type: str | None, known: dict[str, Any]) -> bool:
    """``meter.matches`` on the properties known now: a filter on a property not known yet
    does not count against it."""
    if event_type is not None and event_type != meter.event_type:
        return False
    # an unknown property is given a value the filter allows, then the ledger's rule decides
    probe = {k: example for k in meter.filter for present, example in [meter.allowed_example(k)] if present}
    probe.update((k, v) for k, v in known.items() if v is not None)
    return meter.matches(meter.event_type, probe)


def sub_request_id(base: str, suffix: str) -> str:
    """A request id for a secondary reservation, derived from the primary's (max 200 chars)."""
    rid = f"{base}:{suffix}"
    return rid if len(rid) <= 200 else "gc_" + hashlib.sha256(rid.encode()).hexdigest()


def primary_slot(metering: dict[str, Any] | None, *, meter: str | None, charge: str | None,
                 quantity: Decimal | int | str, event_type: str | None, request_id: str) -> Slot:
    watched = reserved_meter(metering, meter, charge)
    etype = event_type or (watched.event_type if watched is not None else None)
    return Slot(etype, meter, charge, quantity, request_id, carries_usage=True, primary=True, watched=watched)


def plan_slots(metering: dict[str, Any] | None, primary: Slot, known: dict[str, Any]) -> list[Slot]:
    """The secondary slots of the call; sets which slot carries the usage."""
    if metering is None:
        return []
    meters = parse_meters(metering)
    slots: list[Slot] = []
    usage_meters = _usage_meters(meters, known)
    types = {primary.event_type}
    if usage_meters and not any(m.event_type == primary.event_type for m in usage_meters):
        carrier = usage_meters[0]
        primary.carries_usage = False
        slots.append(Slot(carrier.event_type, carrier.key, None, 0, sub_request_id(primary.request_id, "usage"),
                          carries_usage=True, watched=carrier))
        types.add(carrier.event_type)
    if REQUEST_TYPE not in types:
        counter = next((m for m in meters if m.event_type == REQUEST_TYPE and m.aggregation == "count"
                        and could_match(m, REQUEST_TYPE, known)), None)
        if counter is not None:
            slots.append(Slot(REQUEST_TYPE, counter.key, None, 1, sub_request_id(primary.request_id, "request"),
                              watched=counter))
    return slots


def _usage_meters(meters: tuple[Meter, ...], known: dict[str, Any]) -> list[Meter]:
    """Meters that sum or take the maximum of a usage count the call may report."""
    return [m for m in meters if m.aggregation in ("sum", "max") and m.property in USAGE_COUNTS
            and could_match(m, None, known)]


def metering_problems(metering: dict[str, Any] | None, slots: list[Slot], known: dict[str, Any]
                      ) -> list[dict[str, str]]:
    """What keeps the call's usage from being metered, as ``{"code", "message"}``: the
    reserved meter would not count the caller's event, no meter counts its type, or the plan
    measures usage on more event types than the one that carries it."""
    if metering is None:
        return []
    problems: list[dict[str, str]] = []
    meters = parse_meters(metering)
    plan = metering.get("plan") or {}
    where = f"plan {plan.get('id')} v{plan.get('version')}"
    primary = slots[0]
    watched = primary.watched
    if watched is not None and not could_match(watched, primary.event_type, known):
        problems.append({"code": "unmetered_usage", "message": (
            f"the {primary.event_type!r} event this call records would not be counted by meter {watched.key!r} "
            f"of {where}, which counts {watched.event_type!r} events" +
            (f" with {_filter_text(watched.filter)}" if watched.filter else "") +
            f" (the event's properties: {_props_text(known, watched)})")})
    if watched is None and primary.event_type is not None and not any(
            could_match(m, primary.event_type, known) for m in meters):
        problems.append({"code": "unmetered_type", "message":
                         f"no meter of {where} counts {primary.event_type!r} events like this call's"})
    carrier = next((s.event_type for s in slots if s.carries_usage), None)
    elsewhere = sorted({m.key for m in _usage_meters(meters, known) if m.event_type != carrier})
    if elsewhere:
        problems.append({"code": "unmetered_usage", "message": (
            f"meters {', '.join(elsewhere)} of {where} measure usage on other event types than {carrier!r}, "
            "which carries this call's usage: one call's usage is recorded on one event type only")})
    return problems


def unmatched(slot: Slot, properties: dict[str, Any]) -> dict[str, str] | None:
    """After the call (every property known): a warning if the slot's meter does not count
    the event it records (the usage is recorded all the same)."""
    m = slot.watched
    if m is None or slot.event_type is None or m.matches(slot.event_type, properties):
        return None
    return {"code": "unmetered_usage", "message": f"meter {m.key!r} does not count the recorded "
                                                  f"{slot.event_type!r} event ({_props_text(properties, m)})"}


def _filter_text(flt: dict[str, Any]) -> str:
    """The filter as the plan writes it: ``feature=chat``, ``region in [eu, us]``,
    ``tier not free``, ``tag exists`` / ``tag absent``."""
    out = []
    for k, v in flt.items():
        if not isinstance(v, dict):
            out.append(f"{k} in {v}" if isinstance(v, list) else f"{k}={v}")
            continue
        for op, operand in v.items():
            out.append(f"{k} {'exists' if operand else 'absent'}" if op == "exists" else f"{k} {op} {operand}")
    return ", ".join(out)


def _props_text(props: dict[str, Any], meter: Meter) -> str:
    shown = {k: props.get(k) for k in meter.filter} if meter.filter else {}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "none filtered"
