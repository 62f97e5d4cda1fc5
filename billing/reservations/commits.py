"""The event a quota commit records, and how a repeated commit is answered.

A commit's event is what the caller gave, with the hold's defaults for what it left out
(``event_for``). A commit of a committed hold, or whose event id is already taken, is
compared with the stored event on the fields the caller gave only: what it left out is
taken from the stored event, since the first commit may have defaulted it differently (the
timestamp was "now" then). Equal: the stored result (``duplicate``); different:
``event_conflict``. Used by ``billing.reservations.writer`` (and, after its commit, by
``billing.reservations.events.not_inserted``).
"""

from __future__ import annotations

import json
from typing import Any

from billing.errors import BillingError, ErrorCode
from billing.quota.budgets import LIST_PROPERTIES
from billing.ledger.prepare import Prepared, Rejection, prepare
from billing.reservations.types import Hold, HoldStatus
from billing.store.types import from_us

# (event id, type, ts in microseconds, properties) of an event as stored
StoredEvent = tuple[str, str, int, dict]


def committed(reservation_id: str, event_id: str, status: str, *, late: bool,
              warnings: list[dict] | None = None) -> dict[str, Any]:
    """A commit's answer: ``event`` accepted (recorded now) or duplicate (recorded before);
    ``late_commit``: the hold had expired when the event was recorded; ``warnings`` (only
    when there are some): its event was stored unpriced or unmetered."""
    out = {"reservation_id": reservation_id, "event_id": event_id, "status": HoldStatus.COMMITTED, "event": status,
           "late_commit": late}
    if warnings:
        out["warnings"] = warnings
    return out


def stored_props(value: Any) -> dict:
    """Stored properties as a dict (SQLite gives the JSON text, PostgreSQL the object)."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def event_for(given: dict | None, hold: Hold, ctx, now, stored: StoredEvent | None = None) -> dict:
    """The commit's event with the hold's defaults: ``customer``, ``id`` (the reservation
    id), ``type`` (the meter's event type), ``timestamp`` (now), ``properties.model`` (the
    lane's model) and the plan's task property (the hold's task).

    With ``stored``, the event already recorded under the hold or the id: what ``given``
    leaves out is taken from it instead (``properties`` whole, or its ``model`` and task
    property), so a retry compares only what it gave."""
    event = dict(given or {})
    if event.get("customer", hold.customer) != hold.customer:
        raise BillingError("the event's customer is not the reservation's", code=ErrorCode.VALIDATION)
    event["customer"] = hold.customer
    limits = ctx.plan.agent_limits if ctx is not None else None
    task_property = limits.task_property if limits else "task"
    if stored is not None:
        event_id, event_type, ts, props_then = stored
        event.setdefault("id", event_id)
        event.setdefault("type", event_type)
        event.setdefault("timestamp", from_us(ts).isoformat())
        if event.get("properties") is None:
            event["properties"] = dict(props_then)
            return event
        model, task = props_then.get("model"), props_then.get(task_property)
    else:
        event.setdefault("id", hold.id)
        event.setdefault("type", hold.event_type)
        event.setdefault("timestamp", now.isoformat())
        model, task = hold.model, hold.task
    props = event.get("properties") or {}
    if not isinstance(props, dict):
        raise BillingError("event properties must be an object", code=ErrorCode.EVENT_INVALID)
    props = dict(props)
    if model and "model" not in props:
        props["model"] = model
    if task:
        props.setdefault(task_property, task)
    if hold.budgets and ctx is not None:  # a retry compares with what the first commit filled in
        scope_defaults(props, hold.budgets, ctx.budgets, stored[3] if stored is not None else None)
    event["properties"] = props
    return event


def scope_defaults(props: dict, held: str, budgets, stored: dict | None = None) -> None:
    """The scope properties of the budgets a hold counted against (``quota_hold.budgets``)
    that the commit's event leaves out, filled in: the event counts against the budgets the
    reservation held (a property the caller gave is theirs; a list property such as ``tags``
    gets the values its budgets name). ``stored``: the properties of the event the first
    commit stored (a retry takes them from there)."""
    ids = {int(bid) for bid in json.loads(held)}
    given = set(props)
    for b in sorted(budgets, key=lambda b: b.id):
        prop = b.scope_property
        if b.id not in ids or prop is None or prop in given:
            continue
        if stored is not None:
            if prop in stored:
                props[prop] = stored[prop]
        elif prop in LIST_PROPERTIES:
            values = props.setdefault(prop, [])
            if b.scope_value not in values:
                values.append(b.scope_value)
        else:
            props[prop] = b.scope_value


def prepare_commit(ledger, event: dict, now_us: int) -> Prepared:
    """The event validated and costed by the ledger's rules; its rejection raised."""
    p = prepare(event, now_us=now_us, tolerance_us=ledger.tolerance_us, known_types=ledger.known_types,
                pricer=ledger.pricer, measured=ledger.measured, task_properties=ledger.task_properties)
    if type(p) is Rejection:
        raise BillingError(p.message, code=ErrorCode(p.code))
    return p


def same_event(ledger, given: dict | None, hold: Hold, ctx, stored: StoredEvent, now, now_us: int) -> bool:
    """Whether the commit's event is ``stored`` on the fields ``given`` names (an event the
    ledger would reject raises its rejection)."""
    p = prepare_commit(ledger, event_for(given, hold, ctx, now, stored=stored), now_us)
    return (p.event_id, p.type, p.ts, json.loads(p.properties_json)) == stored


def recommit(ledger, given: dict | None, hold: Hold, ctx, stored: StoredEvent | None, now,
             now_us: int) -> dict[str, Any]:
    """A commit of a committed hold: the stored result when ``given`` matches the event
    stored then, else ``event_conflict``."""
    if stored is None:  # the event is inserted with the settlement: only if it was deleted since
        same = (given or {}).get("id", hold.event_id) == hold.event_id
    else:
        same = same_event(ledger, given, hold, ctx, stored, now, now_us)
    if not same:
        raise BillingError(f"reservation {hold.id} was committed with another event ({hold.event_id!r}); "
                           "nothing changed", code=ErrorCode.EVENT_CONFLICT)
    return committed(hold.id, hold.event_id, "duplicate",
                     late=hold.settled_at is not None and hold.expires_at <= hold.settled_at)
