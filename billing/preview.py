"""Rate events from a JSONL file under a plan file, with no database (``invoice preview``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from billing.catalog.schema import Plan
from billing.costs import CostBook, UnknownModel, event_cost
from billing.errors import BillingError, ErrorCode
from billing.events import EventError, UsageEvent, parse_event
from billing.rating.engine import RatingInput, rate_period
from billing.rating.meters import aggregate, check_metered_values, dedupe
from billing.rating.periods import BillingCycle, Period
from billing.rating.types import RatedInvoice
from billing.preview_schedule import Scheduled, schedule


class InputError(BillingError):
    """Bad preview input; ``message`` names the file and line."""

    code = ErrorCode.EVENT_INVALID


def read_events(path: str | Path, book: CostBook, plan: Plan | None = None) -> list[tuple[UsageEvent, Decimal]]:
    """Parse and cost every line; raise InputError listing every bad line as ``file:line: code: reason``.

    An exact replay of an event (same customer, id and content) counts once; the same id
    with other content is a conflict naming both lines. With ``plan``, every property one of
    its sum/max meters measures must be a non-negative number too."""
    problems: list[str] = []
    codes: set[str] = set()  # the problems' codes: one code for them all is the error's code
    out: list[tuple[UsageEvent, Decimal]] = []
    seen: dict[tuple[str, str], tuple[int, str]] = {}  # (customer, id) -> (line, content)
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{number}: not valid JSON: {exc.msg}")
                codes.add(ErrorCode.EVENT_INVALID)
                continue
            try:
                event = parse_event(data)
                first = seen.get((event.customer, event.id))
                if first is not None:
                    if first[1] != event.canonical():
                        problems.append(f"{path}:{number}: {ErrorCode.EVENT_CONFLICT}: event {event.id!r} of customer "
                                        f"{event.customer!r} was already sent on line {first[0]} with different content")
                        codes.add(ErrorCode.EVENT_CONFLICT)
                    continue  # an exact replay counts once
                seen[(event.customer, event.id)] = (number, event.canonical())
                if plan is not None:
                    check_metered_values(plan, event)
                out.append((event, event_cost(event, book)))
            except (EventError, UnknownModel, BillingError) as exc:
                problems.append(f"{path}:{number}: {exc.code}: {exc.message}")
                codes.add(exc.code)
            except (ArithmeticError, ValueError, TypeError):
                # e.g. "cost": "abc" (not a quantity key, so parse_event lets it through)
                problems.append(f"{path}:{number}: {ErrorCode.NON_NUMERIC_QUANTITY}: "
                                "a numeric property (e.g. 'cost') is not a number")
                codes.add(ErrorCode.NON_NUMERIC_QUANTITY)
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        only = ErrorCode(codes.pop()) if len(codes) == 1 else None
        raise InputError("\n".join(shown), details=problems, code=only)
    return out


# a seat change in an events file: {"type": "subscription.seats", "properties": {"seats": N}}
SEAT_EVENT = "subscription.seats"


def seat_events(events: Iterable[UsageEvent]) -> tuple[list[UsageEvent], dict[str, list[tuple[datetime, int]]]]:
    """(the usage events, customer -> its seat changes from the file's seat events)."""
    usage: list[UsageEvent] = []
    seats: dict[str, list[tuple[datetime, int]]] = {}
    problems = []
    for e in events:
        if e.type != SEAT_EVENT:
            usage.append(e)
            continue
        count = e.properties.get("seats")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 1_000_000:
            problems.append(f"event {e.id!r} of customer {e.customer!r}: {SEAT_EVENT} needs properties.seats, a "
                            f"whole number from 0 to 1,000,000, got {count!r}")
            continue
        seats.setdefault(e.customer, []).append((e.timestamp, count))
    if problems:
        raise InputError("\n".join(problems), details=problems)
    return usage, seats


def _period_and_events(plan: Plan, costed: list[tuple[UsageEvent, Decimal]], period: Period | None, timezone: str,
                       customer: str | None):
    events = dedupe(e for e, _ in costed)
    if customer is not None:
        events = [e for e in events if e.customer == customer]
        if not events:
            raise InputError(f"no events for customer {customer!r}")
    if period is None:
        if not events:
            raise InputError("no events: pass --period or --start/--end")
        first = min(e.timestamp for e in events)
        cycle = BillingCycle(plan.billing.interval, "calendar", timezone)
        period = cycle.period_containing(first)
    usage, seats = seat_events(events)
    return period, usage, seats, sorted({e.customer for e in events})


def _seat_history(period: Period, seats: int, changes: Sequence[tuple[datetime, int]],
                  from_file: Sequence[tuple[datetime, int]]) -> list[tuple[datetime, int]]:
    """``seats`` from the period's start, then the file's and the options' changes in time order."""
    return [(period.start, seats), *sorted([*from_file, *changes], key=lambda c: c[0])]


def preview(plan: Plan, costed: Iterable[tuple[UsageEvent, Decimal]], *, period: Period | None = None,
            timezone: str = "UTC", customer: str | None = None, seats: int = 1,
            seat_changes: Sequence[tuple[datetime, int]] = ()) -> list[RatedInvoice]:
    """One invoice per customer for ``period`` (default: the plan's period holding the first event)."""
    costed = list(costed)
    costs = {(e.customer, e.id): c for e, c in costed}
    period, events, from_file, names = _period_and_events(plan, costed, period, timezone, customer)
    invoices = []
    for name in names:
        mine = [e for e in events if e.customer == name]
        usage = aggregate(plan, mine, period.start, period.end, lambda e: costs[(e.customer, e.id)])
        cost = sum((costs[(e.customer, e.id)] for e in mine if period.contains(e.timestamp)), Decimal(0))
        history = _seat_history(period, seats, seat_changes, from_file.get(name, ()))
        invoices.append(rate_period(RatingInput(plan, name, period, usage, seat_changes=history,
                                                provider_cost=cost)))
    return invoices


def preview_schedules(plan: Plan, costed: Iterable[tuple[UsageEvent, Decimal]], *, period: Period | None = None,
                      timezone: str = "UTC", customer: str | None = None, seats: int = 1,
                      seat_changes: Sequence[tuple[datetime, int]] = (), next_period: bool = True
                      ) -> list[tuple[str, list[Scheduled]]]:
    """Per customer, the invoices it receives in and at the end of ``period``
    (``billing.preview_schedule``); ``next_period``: the period is one of the plan's cycle,
    so the closing invoice bills the next period's advance fees."""
    costed = list(costed)
    costs = {(e.customer, e.id): c for e, c in costed}
    period, events, from_file, names = _period_and_events(plan, costed, period, timezone, customer)
    following = BillingCycle(plan.billing.interval, "calendar", timezone).next_period(period) if next_period else None
    out = []
    for name in names:
        mine = [e for e in events if e.customer == name]
        history = _seat_history(period, seats, seat_changes, from_file.get(name, ()))
        out.append((name, schedule(plan, name, period, mine, lambda e: costs[(e.customer, e.id)], history,
                                   next_period=following, timezone=timezone)))
    return out


def parse_instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"not an ISO 8601 instant: {text!r}") from None
    if value.tzinfo is None:
        raise InputError(f"instant {text!r} needs a timezone, e.g. {text}Z")
    return value
