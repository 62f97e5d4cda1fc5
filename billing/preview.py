"""Rate events from a JSONL file under a plan file, with no database (``invoice preview``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
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


class InputError(BillingError):
    """Bad preview input; ``message`` names the file and line."""

    code = ErrorCode.EVENT_INVALID


def read_events(path: str | Path, book: CostBook, plan: Plan | None = None) -> list[tuple[UsageEvent, Decimal]]:
    """Parse and cost every line; raise InputError listing every bad line as ``file:line: code: reason``.

    An exact replay of an event (same customer, id and content) counts once; the same id
    with other content is a conflict naming both lines. With ``plan``, every property one of
    its sum/max meters measures must be a non-negative number too."""
    problems: list[str] = []
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
                continue
            try:
                event = parse_event(data)
                first = seen.get((event.customer, event.id))
                if first is not None:
                    if first[1] != event.canonical():
                        problems.append(f"{path}:{number}: {ErrorCode.EVENT_CONFLICT}: event {event.id!r} of customer "
                                        f"{event.customer!r} was already sent on line {first[0]} with different content")
                    continue  # an exact replay counts once
                seen[(event.customer, event.id)] = (number, event.canonical())
                if plan is not None:
                    check_metered_values(plan, event)
                out.append((event, event_cost(event, book)))
            except (EventError, UnknownModel, BillingError) as exc:
                problems.append(f"{path}:{number}: {exc.code}: {exc.message}")
            except (ArithmeticError, ValueError, TypeError):
                # e.g. "cost": "abc" (not a quantity key, so parse_event lets it through)
                problems.append(f"{path}:{number}: {ErrorCode.NON_NUMERIC_QUANTITY}: "
                                "a numeric property (e.g. 'cost') is not a number")
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise InputError("\n".join(shown), details=problems)
    return out


def preview(plan: Plan, costed: Iterable[tuple[UsageEvent, Decimal]], *, period: Period | None = None,
            timezone: str = "UTC", customer: str | None = None, seats: int = 1) -> list[RatedInvoice]:
    """One invoice per customer for ``period`` (default: the plan's period holding the first event)."""
    costed = list(costed)
    costs = {(e.customer, e.id): c for e, c in costed}
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
    invoices = []
    for name in sorted({e.customer for e in events}):
        mine = [e for e in events if e.customer == name]
        usage = aggregate(plan, mine, period.start, period.end, lambda e: costs[(e.customer, e.id)])
        cost = sum((costs[(e.customer, e.id)] for e in mine if period.contains(e.timestamp)), Decimal(0))
        invoices.append(rate_period(RatingInput(plan, name, period, usage,
                                                seat_changes=[(period.start, seats)],
                                                provider_cost=cost)))
    return invoices


def parse_instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"not an ISO 8601 instant: {text!r}") from None
    if value.tzinfo is None:
        raise InputError(f"instant {text!r} needs a timezone, e.g. {text}Z")
    return value
