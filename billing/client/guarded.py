"""``guarded_call``: reserve -> the LLM call on the granted lane's model -> commit its usage.

The steps are one flow (``billing.client.ops``), driven with plain calls by
``guarded_call`` and in an event loop by ``async_guarded_call``; the streaming forms
(``billing.client.streams``) run its halves around the stream.

1. The plan's metering (cached per client for ``METERING_TTL`` seconds) says which events the
   call produces (``billing.client.calls``); one reservation each, the caller's first. A
   denied reservation releases the others and raises ``QuotaDenied``.
2. Before the call, ``UsageRefused`` (holds released, the LLM function not called) when a
   reservation's answer warns that the model cannot be priced (``unpriced_model``) or the
   type is not metered (``unmetered_type``), or the plan would not count the events
   (``unmetered_usage``), unless ``allow_unpriced`` / ``allow_unmetered``.
3. The call; if it raises, every hold is released and the exception propagates.
4. The events: the model (the granted lane's, else the caller's, else the response's), the
   caller's properties, the usage read from the response on the carrier event, stamped with
   the client's clock at the end of the call. Each commit is written to the client's spool
   first (fsync), sent with its own ``Idempotency-Key``, and deleted once acknowledged. After
   the LLM call nothing raises: a commit the service cannot be reached for stays spooled, one
   it refuses is kept in the spool's ``rejected/`` and logged; ``Guarded`` says which. With
   ``HttpClient(background_commits=True)`` the commits are appended to the spool's journal
   (one write, no fsync) and sent by background threads (``billing.client.journal``):
   ``Guarded.commits`` are ``{"status": "queued"}``.
5. When every commit was acknowledged, up to ``FLUSH_BATCH`` older spooled commits are sent
   too (at most every ``FLUSH_INTERVAL`` seconds).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from billing.client.base import random_uuid
from billing.client.calls import Slot, metering_problems, plan_slots, primary_slot, unmatched
from billing.client.errors import ApiError, QuotaDenied, UsageRefused
from billing.client.ops import Flow, Op, arun, client_op, run, spool_op
from billing.client.spool import Held, commit_entry, deliver_flow, error_json, flush_flow
from billing.client.usage import extract_usage, model_of

log = logging.getLogger("billing.client")

METERING_TTL = 30.0
FLUSH_INTERVAL = 30.0
FLUSH_BATCH = 20
WARNING_CODES = {"unpriced_model": "allow_unpriced", "unmetered_type": "allow_unmetered",
                 "unmetered_usage": "allow_unmetered"}


# event properties the wrapper also sends with the quota request (agent_limits.max_retries /
# max_depth judge them; the plan's retry_property / depth_property keep these default names)
AGENT_CALL_PROPERTIES = ("retry", "depth")


@dataclass
class CallSpec:
    customer: str
    meter: str | None
    charge: str | None = None
    quantity: Decimal | int | str = 1
    model: str | None = None
    task: str | None = None
    tokens: int | None = None
    cost: Decimal | int | str = 0
    steps: int | None = None
    ttl: float = 120.0
    request_id: str | None = None
    event_type: str | None = None
    event_id: str | None = None
    properties: dict[str, Any] | None = None
    allow_unpriced: bool = False
    allow_unmetered: bool = False


@dataclass
class Guarded:
    """What ``guarded_call`` did. ``commit`` is the caller's reservation's commit answer;
    ``events`` every event recorded (or spooled) for the call, ``commits`` their answers
    (``{"status": "spooled"}`` for one kept in the spool, ``{"status": "refused", "error"}``
    for one the service refused). ``recorded``: every commit was acknowledged."""

    response: Any
    decision: dict[str, Any]
    reservation_id: str
    model: str | None
    usage: dict[str, Any] = field(default_factory=dict)
    commit: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    commits: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def recorded(self) -> bool:
        return all(c.get("status") in ("committed", "recorded") for c in self.commits)

    @property
    def queued(self) -> int:
        """Commits handed to the background (``HttpClient(background_commits=True)``)."""
        return sum(1 for c in self.commits if c.get("status") == "queued")

    @property
    def spooled(self) -> int:
        return sum(1 for c in self.commits if c.get("status") == "spooled")

    @property
    def refused(self) -> list[dict[str, Any]]:
        return [c["error"] for c in self.commits if c.get("status") == "refused"]


@dataclass
class Session:
    """A call between its reservations and its commits."""

    spec: CallSpec
    slots: list[Slot]
    model: str | None
    task_property: str
    warnings: list[dict[str, Any]]

    @property
    def decision(self) -> dict[str, Any]:
        return self.slots[0].reservation["decision"]


# ------------------------------------------------------------------------ the flow

def begin_flow(spec: CallSpec) -> Flow[Session]:
    """Steps 1-2: the reservations, or ``QuotaDenied`` / ``UsageRefused`` with none left held."""
    metering = yield from _metering_flow(spec.customer)
    primary = primary_slot(metering, meter=spec.meter, charge=spec.charge, quantity=spec.quantity,
                           event_type=spec.event_type, request_id=spec.request_id or f"gc_{random_uuid().hex}")
    slots = plan_slots(metering, primary, _known(spec, spec.model))  # decides which event carries the usage
    granted: list[Slot] = []
    try:
        yield from _reserve_flow(spec, primary, spec.model, granted)
        model = (primary.reservation["decision"].get("lane") or {}).get("model") or spec.model
        for slot in slots:
            yield from _reserve_flow(spec, slot, model, granted)
        session = Session(spec, [primary, *slots], model, (metering or {}).get("task_property") or "task", [])
        problems = metering_problems(metering, session.slots, _known(spec, model))
        for slot in session.slots:
            answer = slot.reservation
            for warning in [*(answer.get("warnings") or ()), *((answer.get("decision") or {}).get("warnings") or ())]:
                if isinstance(warning, dict) and warning not in problems:
                    problems.append(warning)
        blocking = [p for p in problems if str(p.get("code")) in WARNING_CODES
                    and not getattr(spec, WARNING_CODES[str(p.get("code"))])]
        if blocking:
            raise UsageRefused([{"code": str(p.get("code")), "message": str(p.get("message"))} for p in blocking])
    except BaseException:
        yield from _release_flow(granted)
        raise
    session.warnings = problems
    return session


def _known(spec: CallSpec, model: str | None) -> dict[str, Any]:
    """The event properties known before the call."""
    known = dict(spec.properties or {})
    if model is not None:
        known["model"] = model
    return known


def _metering_flow(customer: str) -> Flow[dict[str, Any] | None]:
    hit = yield client_op("metering_cached", customer, METERING_TTL, inline=True)
    if hit is not None:
        return hit[0]
    try:
        metering = yield client_op("metering", customer)
    except NotImplementedError:
        metering = None
    except ApiError as exc:
        if not (exc.status in (404, 405) and exc.raw_code == "not_found"):
            raise
        metering = None  # a service without the metering route: the caller's event only
    yield client_op("remember_metering", customer, metering, inline=True)
    return metering


def _reserve_flow(spec: CallSpec, slot: Slot, model: str | None, granted: list[Slot]) -> Flow[None]:
    """Reserve one slot (the agent task and the estimates go with the usage); a deny raises."""
    estimates = dict(task=spec.task, tokens=spec.tokens, cost=spec.cost, steps=spec.steps) \
        if slot.carries_usage else {}
    props = spec.properties or {}
    for name in AGENT_CALL_PROPERTIES:  # the call's retry / depth, judged by agent_limits
        if isinstance(props.get(name), int) and not isinstance(props[name], bool):
            estimates[name] = props[name]
    answer = yield client_op("reserve", spec.customer, slot.meter, charge=slot.charge, quantity=slot.quantity,
                             model=model, ttl=spec.ttl, request_id=slot.request_id, **estimates)
    slot.reservation = answer
    if not answer.get("granted"):
        raise QuotaDenied(answer["decision"])
    granted.append(slot)


def _release_flow(slots: list[Slot]) -> Flow[None]:
    """Release the holds (best effort: a hold not released expires by itself)."""
    for slot in slots:
        try:
            yield client_op("release", slot.reservation_id)
        except Exception as exc:  # noqa: BLE001 - the caller's error matters more
            log.warning("could not release hold %s (it expires by itself): %s", slot.reservation_id, exc)


def abort_flow(session: Session) -> Flow[None]:
    """The call failed before any usage: release every hold."""
    yield from _release_flow(session.slots)


def finish_flow(session: Session, response: Any, usage: dict[str, Any], response_model: str | None) -> Flow[Guarded]:
    """Steps 4-5: record the call's events. Never raises for a commit that fails."""
    spec = session.spec
    model = session.model or response_model
    now = yield client_op("now", inline=True)
    stamp = now.isoformat().replace("+00:00", "Z")
    base = dict(spec.properties or {})
    if model is not None:
        base["model"] = model
    events, warnings = [], list(session.warnings)
    for slot in session.slots:
        props = dict(base)
        if slot.carries_usage:
            props.update(usage)
            if spec.task is not None:
                props[session.task_property] = spec.task
        event = {"id": (spec.event_id if slot.primary and spec.event_id else slot.reservation_id),
                 "customer": spec.customer, "timestamp": stamp, "properties": props}
        if slot.event_type is not None:
            event["type"] = slot.event_type
        events.append(event)
        warning = unmatched(slot, props)
        if warning is not None and warning not in warnings:
            warnings.append(warning)
    if not usage:
        warnings.append({"code": "no_usage", "message": "the response carried no usage (an OpenAI stream needs "
                                                        "stream_options={'include_usage': True}): recorded without "
                                                        "token counts"})
        log.warning("billing: %s", warnings[-1]["message"])
    entries = [commit_entry(slot.reservation_id, event, str(random_uuid()))
               for slot, event in zip(session.slots, events)]
    if (yield client_op("commits_in_background", inline=True)):
        try:  # one write to the journal; sent by the client's background threads
            commits = yield client_op("enqueue_commits", entries, inline=True)
        except Exception as exc:  # noqa: BLE001 - e.g. the disk is full: sent here, as without a journal
            log.error("billing journal not writable (%s): sending the commits now", exc)
        else:
            return Guarded(response, session.decision, session.slots[0].reservation_id, model, usage,
                           commits[0], events, commits, warnings)
    held: list[Held] = [Held(None, e, None) for e in entries]  # type: ignore[arg-type]
    has_spool = yield client_op("has_spool", inline=True)
    if has_spool:
        try:
            held = yield spool_op("add", entries)
        except Exception as exc:  # noqa: BLE001 - the commits still go out, only without a copy on disk
            log.error("billing spool not writable (%s): sending the commits without it", exc)
            has_spool = False
    commits = []
    for item in held:
        try:
            _outcome, answer = yield from deliver_flow(item, spooled=has_spool)
        except Exception as exc:  # noqa: BLE001 - e.g. the disk filled up while settling the spool file
            log.error("billing commit of %s not settled: %s", item.data["reservation_id"], exc)
            answer = {"status": "spooled" if has_spool else "undelivered", "error": error_json(exc)}
        commits.append(answer)
    result = Guarded(response, session.decision, session.slots[0].reservation_id, model, usage,
                     commits[0], events, commits, warnings)
    if has_spool and result.recorded:
        try:
            if (yield spool_op("flush_due", FLUSH_INTERVAL)):
                report = yield from flush_flow(FLUSH_BATCH)
                if report.delivered or report.rejected:
                    log.info("billing spool: %s older commits delivered, %s refused", report.delivered,
                             report.rejected)
        except Exception as exc:  # noqa: BLE001 - this call is recorded; the older ones wait
            log.warning("billing spool flush failed: %s", exc)
    return result


def guarded_flow(spec: CallSpec) -> Flow[Guarded]:
    session = yield from begin_flow(spec)
    try:
        response = yield Op("call", "call", (session.model,))
    except BaseException:
        yield from abort_flow(session)
        raise
    return (yield from finish_flow(session, response, extract_usage(response), model_of(response)))


# ---------------------------------------------------------------------- public API

def guarded_call(client: Any, customer: str, meter: str | None, call: Callable[[str | None], Any], *,
                 charge: str | None = None, quantity: Decimal | int | str = 1, model: str | None = None,
                 task: str | None = None, tokens: int | None = None, cost: Decimal | int | str = 0,
                 steps: int | None = None, ttl: float = 120.0, request_id: str | None = None,
                 event_type: str | None = None, event_id: str | None = None,
                 properties: dict[str, Any] | None = None, allow_unpriced: bool = False,
                 allow_unmetered: bool = False) -> Guarded:
    """reserve -> ``call(model)`` on the granted lane's model -> commit the actual usage (see
    the module docstring). ``call`` gets the granted lane's model (a downgrade names a
    cheaper one), else ``model``, else None (then the response's model is recorded); ``quantity`` / ``tokens`` / ``cost`` / ``steps``: estimates the decision
    holds; ``task``: the agent task; ``properties``: added to every event (feature, user); its ``retry`` / ``depth`` also go with
    the reservation (``agent_limits.max_retries`` / ``max_depth`` judge them)."""
    spec = CallSpec(customer, meter, charge, quantity, model, task, tokens, cost, steps, ttl, request_id,
                    event_type, event_id, properties, allow_unpriced, allow_unmetered)
    return run(guarded_flow(spec), client, call)


async def async_guarded_call(client: Any, customer: str, meter: str | None, call: Callable[[str | None], Any], *,
                             charge: str | None = None, quantity: Decimal | int | str = 1, model: str | None = None,
                             task: str | None = None, tokens: int | None = None, cost: Decimal | int | str = 0,
                             steps: int | None = None, ttl: float = 120.0, request_id: str | None = None,
                             event_type: str | None = None, event_id: str | None = None,
                             properties: dict[str, Any] | None = None, allow_unpriced: bool = False,
                             allow_unmetered: bool = False) -> Guarded:
    """``guarded_call`` in an event loop: ``call(model)`` may return an awaitable;
    ``client`` an ``AsyncHttpClient`` (or a blocking client, run in a worker thread)."""
    spec = CallSpec(customer, meter, charge, quantity, model, task, tokens, cost, steps, ttl, request_id,
                    event_type, event_id, properties, allow_unpriced, allow_unmetered)
    return await arun(guarded_flow(spec), client, call)
