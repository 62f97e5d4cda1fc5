"""The usage event as apps send it (DESIGN.md section 5), parsed and validated purely.

Numeric properties that are quantities (``*_tokens``, ``quantity``, ``steps``...)
must be non-negative numbers; the timestamp must carry a timezone and is kept in UTC.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from billing.errors import BillingError, ErrorCode
from billing.money import to_decimal

# Built-in event types the engine understands (plans may meter any other type too).
LLM_CALL = "llm.call"
REQUEST = "request"
AGENT_STEP = "agent.step"
OUTCOME = "outcome"
OUTCOME_DISPUTED = "outcome.disputed"
OUTCOME_REOPENED = "outcome.reopened"
SEAT = "seat"
BUILTIN_TYPES = frozenset({LLM_CALL, REQUEST, AGENT_STEP, OUTCOME, OUTCOME_DISPUTED, OUTCOME_REOPENED, SEAT})

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")


def tokens_of(props: dict) -> int:
    """Total token count of an event's properties (``TOKEN_FIELDS``; agent task usage)."""
    total = 0
    for name in TOKEN_FIELDS:
        value = props.get(name)
        if type(value) is int:
            total += value
        elif isinstance(value, (float, str, Decimal)) and not isinstance(value, bool):
            try:
                total += int(Decimal(str(value)))
            except Exception:  # noqa: BLE001 - ingestion already validated quantities
                pass
    return total


# Upper bounds that keep every stored number exact in a 64-bit integer column: a quantity
# property per event (10^12 tokens, units or steps; micro-units up to 10^18) and the
# provider cost of one event ($1,000,000; picodollars up to 10^18).
MAX_EVENT_QUANTITY = 10**12
MAX_EVENT_COST = Decimal(10**6)
# An event's properties, serialized as JSON, are at most this many bytes (32 KiB: a usage
# record, not a payload store); more is the event's rejection with ``event_too_large``.
MAX_PROPERTIES_BYTES = 32 * 1024

# The instants the engine takes (event timestamps, subscription changes): from 2000-01-01
# until before 2100-01-01, UTC. Outside is a typo or an attack (a 1969 event could never be
# billed; year 1 or 9999 with a +14:00 offset overflows date arithmetic): ``bad_timestamp``.
EARLIEST_INSTANT = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(2100, 1, 1, tzinfo=UTC)
INSTANT_WINDOW = "from 2000-01-01T00:00:00Z until before 2100-01-01T00:00:00Z"


def instant_problem(value: datetime) -> str | None:
    """Why an aware instant is outside the window, or None (comparing aware instants never
    overflows, converting them may)."""
    if EARLIEST_INSTANT <= value < LATEST_INSTANT:
        return None
    return f"must be {INSTANT_WINDOW}"


def is_quantity_key(key: str) -> bool:
    """Properties that must be non-negative numbers (token counts, quantities, costs)."""
    return key.endswith("_tokens") or key in ("quantity", "steps", "amount", "units", "cost")


class EventError(BillingError):
    code = ErrorCode.EVENT_INVALID


class UsageEvent(BaseModel):
    """One metered usage event. Immutable; ``id`` is chosen by the client."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    customer: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=100)
    timestamp: datetime
    properties: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        """ISO 8601 text, parsed by ``datetime.fromisoformat`` (as the ingestion fast path does)."""
        if isinstance(value, datetime):
            return value
        if not isinstance(value, str):
            raise ValueError("timestamp must be an ISO 8601 string with a timezone")
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"timestamp {value!r} is not ISO 8601") from None

    @field_validator("id", "customer", "type")
    @classmethod
    def _encodable(cls, value: str) -> str:
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("must be valid Unicode text (a lone surrogate is not)") from None
        return value

    @field_validator("properties", mode="before")
    @classmethod
    def _no_properties(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("timestamp")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp must include a timezone (e.g. 2026-10-03T12:00:00Z)")
        problem = instant_problem(value)
        if problem:
            raise ValueError(f"timestamp {value.isoformat()} {problem}")
        return value.astimezone(UTC)

    def number(self, key: str, default: Decimal | None = None) -> Decimal | None:
        """A numeric property as Decimal (never float); ``default`` when absent."""
        if key not in self.properties or self.properties[key] is None:
            return default
        return to_decimal(self.properties[key])

    def canonical(self) -> str:
        """Content fingerprint used to tell a duplicate from a conflict."""
        return json.dumps(
            {"customer": self.customer, "type": self.type,
             "timestamp": self.timestamp.isoformat(), "properties": self.properties},
            sort_keys=True, separators=(",", ":"), default=str,
        )


def check_quantities(event: UsageEvent, measured: frozenset[str] = frozenset()) -> None:
    """Raise EventError with a precise code if a quantity property (a built-in quantity key,
    or one of ``measured``: the properties plans sum or take the maximum of) is
    non-numeric, negative or too large."""
    for key, value in event.properties.items():
        if not (is_quantity_key(key) or key in measured):
            continue
        try:
            number = to_decimal(value)
        except (InvalidOperation, ValueError, TypeError):
            raise EventError(f"property {key!r} must be a number, got {value!r}",
                             code=ErrorCode.NON_NUMERIC_QUANTITY) from None
        if number < 0:
            raise EventError(f"property {key!r} must not be negative, got {value}",
                             code=ErrorCode.NEGATIVE_QUANTITY)
        if number > MAX_EVENT_QUANTITY:
            raise EventError(f"property {key!r} must be at most {MAX_EVENT_QUANTITY:,} per event, got {value}",
                             code=ErrorCode.QUANTITY_TOO_LARGE)


def parse_event(data: Any, measured: frozenset[str] = frozenset()) -> UsageEvent:
    """Parse one JSON object into a UsageEvent, raising EventError with a clear reason
    (``measured``: more property names that must be quantities, see ``check_quantities``)."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise EventError(f"an event must be a JSON object, got {type(data).__name__}")
    try:
        event = UsageEvent.model_validate(data)
    except ValidationError as exc:
        problems = []
        code = ErrorCode.EVENT_INVALID
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "event"
            problems.append(f"{loc}: {err['msg']}")
            if err["loc"] and err["loc"][0] == "timestamp":
                code = ErrorCode.BAD_TIMESTAMP
        raise EventError("; ".join(problems), code=code) from None
    check_quantities(event, measured)
    check_storable(event.properties)
    return event


def check_storable(properties: dict) -> None:
    """Raise EventError unless the properties can be stored as JSON unchanged: text must be
    valid Unicode (no lone surrogates) and integers fit 64 bits (what orjson, the ledger's
    serializer, accepts), in at most ``MAX_PROPERTIES_BYTES``."""
    import orjson

    try:
        text = orjson.dumps(properties, default=str)
    except (TypeError, orjson.JSONEncodeError):
        raise EventError("properties are not JSON-serialisable (invalid text or an integer over 64 bits)",
                         code=ErrorCode.EVENT_INVALID) from None
    if len(text) > MAX_PROPERTIES_BYTES:
        raise EventError(properties_too_large(len(text)), code=ErrorCode.EVENT_TOO_LARGE)


def properties_too_large(size: int) -> str:
    return f"properties are {size:,} bytes as JSON; at most {MAX_PROPERTIES_BYTES:,} per event"
