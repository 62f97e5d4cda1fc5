"""Values of two-phase quota use: ``Reservation``, request validation, hold ops."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple

from billing.errors import BillingError, ErrorCode
from billing.ledger.prepare import MAX_TASK_ID
from billing.money import dec_str, to_decimal
from billing.quota.decide import Decision, QuotaRequest

MAX_QUANTITY = 10**12  # units, tokens, steps per request (fits the micro-unit BIGINT columns)
MAX_COST = 10**6  # provider cost per request (fits the pico BIGINT column)
_MAX_Q = Decimal(MAX_QUANTITY)
_MAX_C = Decimal(MAX_COST)
_ZERO = Decimal(0)
_SMALL_INTS = {i: Decimal(i) for i in range(0, 1001)}


@dataclass(frozen=True)
class Reservation:
    id: str | None  # None: denied, nothing held
    decision: Decision | dict
    expires_at: datetime | None = None
    replayed: bool = False  # an earlier reserve with the same request id
    status: HoldStatus | None = None  # None: denied
    warnings: tuple[dict[str, str], ...] = ()  # {"code", "message"}: see Quota.model_warnings

    @property
    def granted(self) -> bool:
        return self.id is not None

    def to_json(self) -> dict[str, Any]:
        decision = self.decision.to_json() if isinstance(self.decision, Decision) else self.decision
        out = {"reservation_id": self.id, "granted": self.granted,
               "expires_at": self.expires_at.isoformat().replace("+00:00", "Z") if self.expires_at else None,
               "replayed": self.replayed, "status": self.status if self.id else None, "decision": decision}
        if self.warnings:
            out["warnings"] = [dict(w) for w in self.warnings]
        return out


@dataclass(frozen=True)
class WarnedDecision(Decision):
    """A decision with ``warnings`` (``{"code", "message"}``; the quota service adds them,
    the pure decision knows nothing of the cost book): its JSON carries them."""

    warnings: tuple[dict[str, str], ...] = ()

    @classmethod
    def of(cls, decision: Decision, warnings: tuple[dict[str, str], ...]) -> "WarnedDecision":
        return cls(**{f.name: getattr(decision, f.name) for f in fields(Decision)}, warnings=warnings)

    def to_json(self) -> dict[str, Any]:
        out = Decision.to_json(self)
        out["warnings"] = [dict(w) for w in self.warnings]
        return out


def _number(value: Any) -> Decimal:
    if type(value) is int:
        small = _SMALL_INTS.get(value)
        return small if small is not None else Decimal(value)
    if type(value) is Decimal and value.is_finite():
        return value
    return to_decimal(value)  # rejects NaN and infinities


def storable_text(name: str, value: Any) -> None:
    """A ``validation_error`` unless ``value`` (when given) is text both databases can store:
    no NUL character (PostgreSQL refuses it), no lone surrogate (not UTF-8)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise BillingError(f"{name} must be a string", code=ErrorCode.VALIDATION)
    if "\x00" in value or not (value.isascii() or _utf8(value)):
        raise BillingError(f"{name} must be text without NUL characters or lone surrogates",
                           code=ErrorCode.VALIDATION)


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_request(customer, key, quantity, model, task, tokens, cost, steps, retry=None, depth=None,
                  properties=None) -> QuotaRequest:
    """Validate a quota request's numbers (a ``validation_error`` on anything out of range)
    and its text (``storable_text``)."""
    for name, value in (("customer", customer), ("meter or charge", key), ("model", model), ("task", task)):
        storable_text(name, value)
    if task is not None and not 0 < len(task) <= MAX_TASK_ID:
        raise BillingError(f"task must be 1-{MAX_TASK_ID} characters", code=ErrorCode.VALIDATION)
    try:
        q = _number(quantity)
        c = _number(cost)
    except Exception:  # noqa: BLE001
        raise BillingError("quantity and cost must be numbers", code=ErrorCode.VALIDATION) from None
    if not (_ZERO <= q <= _MAX_Q and _ZERO <= c <= _MAX_C):
        raise BillingError(f"quantity must be in [0, {MAX_QUANTITY}] and cost in [0, {MAX_COST}]",
                           code=ErrorCode.VALIDATION)
    for name, value in (("tokens", tokens), ("steps", steps), ("retry", retry), ("depth", depth)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value <= MAX_QUANTITY):
            raise BillingError(f"{name} must be an integer in [0, {MAX_QUANTITY}]", code=ErrorCode.VALIDATION)
    return QuotaRequest(customer, key, q, model, task, tokens, c, steps, retry, depth, _properties(properties))


MAX_PROPERTIES = 32


def _properties(props: Any) -> dict | None:
    """A request's event properties (budget scopes): at most 32, names of letters, digits and
    '_', values text, numbers, booleans or lists of them (``tags``), each at most 200 characters."""
    if props is None:
        return None
    if not isinstance(props, dict) or len(props) > MAX_PROPERTIES:
        raise BillingError(f"properties must be an object of at most {MAX_PROPERTIES} properties",
                           code=ErrorCode.VALIDATION)
    for name, value in props.items():
        if type(name) is not str or not 0 < len(name) <= 64:
            raise BillingError("properties: names are 1-64 characters", code=ErrorCode.VALIDATION)
        if type(value) is str and len(value) <= 200 and value.isascii() and "\x00" not in value:
            continue  # the common case, checked in C
        for v in (value if isinstance(value, list) else [value]):
            if isinstance(v, (dict, list)) or (isinstance(v, str) and len(v) > 200):
                raise BillingError(f"properties.{name}: a text of at most 200 characters, a number, a boolean "
                                   "or a list of them", code=ErrorCode.VALIDATION)
            if isinstance(v, str):
                storable_text(f"properties.{name}", v)
    return props or None


def request_json(r: QuotaRequest) -> dict:
    """What a reservation was asked for (stored with the hold: a replay must match it)."""
    out = {"key": r.key, "quantity": dec_str(r.quantity), "model": r.model, "task": r.task, "tokens": r.tokens,
           "cost": dec_str(r.cost), "steps": r.steps}
    if r.retry is not None or r.depth is not None:  # (requests stored before these existed have neither)
        out["retry"], out["depth"] = r.retry, r.depth
    if r.properties:
        out["properties"] = r.properties
    return out


class Hold(NamedTuple):
    """A hold as a commit or release finds it (``billing.reservations.sql.holds_query``)."""

    id: str
    customer: str
    status: str  # held | committed | released | expired (marked by Quota.purge_expired)
    event_type: str
    model: str | None  # the lane's model
    task: str | None
    event_id: str | None  # the event a committed hold was settled with
    expires_at: int
    settled_at: int | None
    meter: str
    units_micro: int
    budgets: str | None = None  # quota_hold.budgets: its part in each event-read budget (JSON)

    @property
    def open(self) -> bool:
        """Not settled yet: a commit records its event (late when the hold expired)."""
        return self.status in OPEN_HOLD

    def late_at(self, now_us: int) -> bool:
        """Whether settling it at ``now_us`` is a late commit (the hold had expired)."""
        return self.expires_at <= now_us


class HoldStatus(StrEnum):
    """A hold's status (``quota_hold.status``; the SQL statements name the same values). A
    hold is ``held`` until it is committed or released; an expired hold is marked ``expired``
    by the purge and may still be committed (a late commit)."""

    HELD = "held"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"


OPEN_HOLD = (HoldStatus.HELD, HoldStatus.EXPIRED)  # the statuses a commit settles


READ_AGAIN = "read-again"  # Op.alert when the post-commit usage read failed


class Op:
    """One reserve / commit / release waiting for its batch (``billing.reservations.writer``)."""

    __slots__ = ("kind", "customer", "request", "ttl", "request_id", "reservation_id", "event", "allowed",
                 "result", "error", "done", "queued", "ctx", "alert", "wake", "later")

    def __init__(self, kind: str, *, customer: str | None = None, request: QuotaRequest | None = None,
                 ttl: float = 0.0, request_id: str | None = None, reservation_id: str | None = None,
                 event: dict | None = None, allowed: str | None = None):
        self.kind = kind
        self.customer = customer
        self.request = request
        self.ttl = ttl
        self.request_id = request_id
        self.reservation_id = reservation_id
        self.event = event
        self.allowed = allowed  # commit / release: the only customer the caller may act on (None: any)
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        self.queued = True
        self.ctx = None
        self.alert = None  # commit: (customer, committed usage rows after commit) for budget alerts
        self.wake = None  # a lock its caller sleeps on (billing.reservations.writer.Combiner)
        self.later = None  # its caller's durability.Promise: it commits a durable write before answering

    def reset(self) -> None:
        self.result = self.error = self.alert = None
