"""Budgets at every scope (pure): what a budget is, its reset window, which calls count
against it, and how the quota decision judges it.

A budget belongs to one customer and limits one measure of the usage in its scope over a
reset window:

* **scope**: the whole customer (``scope_property`` None), or the events whose property
  ``scope_property`` has the value ``scope_value`` (``team``, ``application``, ``feature``,
  ``user``, ``api_key``, any property name; ``tags``: the events whose ``tags`` list holds
  the value). A request counts against a scoped budget when its ``properties`` carry the
  value (the same properties its event will carry);
* **measure**: ``billed`` (what the invoice bills for the usage: the period's usage spend
  with the scope's usage less the spend without it, by the one charge arithmetic),
  ``cost`` (provider cost) or ``units`` (of one ``meter``);
* **window**: ``daily``, ``weekly`` (from Monday), ``monthly`` (from the 1st) in the
  customer's timezone (or the budget's own ``timezone``), or ``period`` (the billing period);
* **enforcement**: ``soft`` (policy ``alert``: the call is allowed and the crossing is
  recorded) or ``hard`` (policy ``deny``, or ``downgrade`` to a named cheaper ``model``).

A budget is *passed* when what its scope used in the window (committed events and live
holds) plus what the request adds exceeds ``amount``. The decision returns the tightest
budget the request counts against: the least remaining share of its amount.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billing.errors import BillingError, ErrorCode

ZERO = Decimal(0)
MEASURES = ("billed", "cost", "units")
WINDOWS = ("daily", "weekly", "monthly", "period")
ENFORCEMENTS = ("soft", "hard")
POLICIES = {"soft": ("alert",), "hard": ("deny", "downgrade")}
SCOPE_ALIASES = {"team": "team", "application": "application", "app": "application", "feature": "feature",
                 "user": "user", "api_key": "api_key", "tag": "tags", "tags": "tags"}
LIST_PROPERTIES = frozenset({"tags"})  # a list property: an event is in scope when the list holds the value
MAX_AMOUNT = Decimal(10) ** 15
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
_PROPERTY = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")  # the property names SQL aggregation accepts


@dataclass(frozen=True, slots=True)
class Budget:
    id: int
    name: str
    measure: str  # billed | cost | units
    amount: Decimal
    window: str  # daily | weekly | monthly | period
    enforcement: str  # soft | hard
    policy: str  # alert | deny | downgrade
    scope_property: str | None = None  # None: the whole customer
    scope_value: str | None = None
    meter: str | None = None  # units: the meter counted
    model: str | None = None  # downgrade: the cheaper model
    timezone: str | None = None  # None: the customer's

    @property
    def customer_wide(self) -> bool:
        return self.scope_property is None

    def counts(self, meter: str, properties: Mapping[str, Any] | None) -> bool:
        """Whether a request on ``meter`` carrying ``properties`` counts against this budget."""
        if self.measure == "units" and self.meter != meter:
            return False
        return self.customer_wide or in_scope(self.scope_property, self.scope_value, properties)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "measure": self.measure, "amount": _dec(self.amount),
                "window": self.window, "enforcement": self.enforcement, "policy": self.policy,
                "scope": None if self.customer_wide else {"property": self.scope_property, "value": self.scope_value},
                "meter": self.meter, "model": self.model, "timezone": self.timezone}


def _dec(value: Decimal) -> str:
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def in_scope(prop: str | None, value: str | None, properties: Mapping[str, Any] | None) -> bool:
    """Whether event properties are in a scope, as the SQL of ``reservations.budget_sql``
    reads them: the property's value as text (``str`` of the JSON value, booleans
    ``True``/``False``) equals ``value``; for a list property, the list holds it."""
    if prop is None:
        return True
    if not properties or prop not in properties:
        return False
    found = properties[prop]
    if prop in LIST_PROPERTIES:
        return isinstance(found, list) and any(_as_text(v) == value for v in found)
    return _as_text(found) == value


def _as_text(v: Any) -> str | None:
    if v is None or isinstance(v, (dict, list)):
        return None
    return str(v)


# ------------------------------------------------------------------ validation

def parse_budget(data: Mapping[str, Any], *, budget_id: int = 0) -> Budget:
    """A budget from its fields as the API and CLI take them, or a ``validation_error``
    naming every bad field (``details.problems``: ``field: message``)."""
    problems: list[str] = []
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append("name: 1-100 characters of letters, digits, '_', '.', ':', '-', starting with a letter "
                        "or digit")
    measure = data.get("measure")
    if measure not in MEASURES:
        problems.append(f"measure: must be one of {', '.join(MEASURES)} (got {measure!r})")
    amount = _amount(data.get("amount"), problems)
    window = data.get("window", "period")
    if window not in WINDOWS:
        problems.append(f"window: must be one of {', '.join(WINDOWS)} (got {window!r})")
    enforcement = data.get("enforcement", "soft")
    if enforcement not in ENFORCEMENTS:
        problems.append(f"enforcement: must be soft or hard (got {enforcement!r})")
        enforcement = "soft"
    policy = data.get("policy") or POLICIES[enforcement][0]
    if policy not in POLICIES[enforcement]:
        problems.append(f"policy: a {enforcement} budget's policy is {' or '.join(POLICIES[enforcement])} "
                        f"(got {policy!r})")
    model = data.get("model")
    if policy == "downgrade" and (not isinstance(model, str) or not 0 < len(model) <= 200):
        problems.append("model: a downgrade names the cheaper model (1-200 characters)")
    elif policy != "downgrade" and model is not None:
        problems.append("model: only a downgrade policy names a model")
    meter = data.get("meter")
    if measure == "units" and (not isinstance(meter, str) or not 0 < len(meter) <= 80):
        problems.append("meter: a units budget names the meter it counts")
    elif measure != "units" and meter is not None:
        problems.append("meter: only a units budget names a meter")
    prop, value = _scope(data.get("scope"), problems)
    tz = data.get("timezone")
    if tz is not None and not valid_timezone(tz):
        problems.append(f"timezone: unknown timezone {tz!r} (an IANA name such as Europe/Paris)")
    if problems:
        raise BillingError("invalid budget: " + "; ".join(problems), code=ErrorCode.VALIDATION,
                           details={"problems": problems})
    return Budget(budget_id, name, measure, amount, window, enforcement, policy, prop, value, meter, model, tz)


def _amount(raw: Any, problems: list[str]) -> Decimal:
    try:
        if isinstance(raw, bool) or isinstance(raw, float) or raw is None:
            raise InvalidOperation
        amount = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        problems.append(f"amount: a decimal number as a string or integer (got {raw!r})")
        return ZERO
    if not amount.is_finite() or amount <= 0 or amount > MAX_AMOUNT:
        problems.append("amount: more than 0 and at most 10^15")
    elif amount.as_tuple().exponent < -12:  # type: ignore[operator]
        problems.append("amount: at most 12 decimal places")
    return amount


def _scope(raw: Any, problems: list[str]) -> tuple[str | None, str | None]:
    if raw is None or raw == "customer":
        return None, None
    if isinstance(raw, str) and "=" in raw:  # the CLI's team=research
        key, _, value = raw.partition("=")
        raw = {"property": key, "value": value}
    if not isinstance(raw, Mapping) or set(raw) != {"property", "value"}:
        problems.append("scope: 'customer' or {property, value} (a property such as team, application, feature, "
                        "user, api_key, tag)")
        return None, None
    prop, value = raw["property"], raw["value"]
    prop = SCOPE_ALIASES.get(prop, prop) if isinstance(prop, str) else prop
    if not isinstance(prop, str) or not _PROPERTY.match(prop):
        problems.append(f"scope.property: a property name ([a-z_][a-z0-9_]*, at most 64) (got {prop!r})")
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        problems.append("scope.value: 1-200 characters")
    return prop, value


def valid_timezone(name: Any) -> bool:
    if not isinstance(name, str) or not name or len(name) > 64 or ".." in name or name.startswith("/"):
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


# ---------------------------------------------------------------------- windows

@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def window(budget: Budget, now: datetime, customer_tz: str, period_start: datetime, period_end: datetime
           ) -> tuple[datetime, datetime]:
    """The budget's reset window containing ``now`` (aware): [start, end)."""
    if budget.window == "period":
        return period_start, period_end
    tz = _zone(budget.timezone or customer_tz)
    local = now.astimezone(tz)
    day = datetime(local.year, local.month, local.day, tzinfo=tz)
    if budget.window == "daily":
        start, nxt = day, day.date() + timedelta(days=1)
    elif budget.window == "weekly":
        start_date = day.date() - timedelta(days=local.weekday())
        start, nxt = datetime(start_date.year, start_date.month, start_date.day, tzinfo=tz), \
            start_date + timedelta(days=7)
    else:  # monthly
        start = datetime(local.year, local.month, 1, tzinfo=tz)
        nxt = (start.date().replace(day=28) + timedelta(days=4)).replace(day=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
    return start, end


def from_counters(budget: Budget) -> bool:
    """A customer-wide budget over the billing period: its usage is the period's counters
    (read for the decision anyway), no event is read for it."""
    return budget.customer_wide and budget.window == "period"


# -------------------------------------------------------------------- the state

@dataclass(frozen=True, slots=True)
class BudgetUse:
    """A budget with its window and what its scope used there (committed and held; None:
    the decision computes it from the period's counters, ``from_counters``)."""

    budget: Budget
    start: datetime
    end: datetime
    used: Decimal | None


@dataclass(frozen=True, slots=True)
class BudgetHit:
    budget: Budget
    value: Decimal  # used + the request's part
    limit: Decimal
    start: datetime  # the window passed
    end: datetime

    @property
    def message(self) -> str:
        b = self.budget
        scope = "customer" if b.customer_wide else f"{b.scope_property}={b.scope_value}"
        return (f"budget {b.name!r} ({scope}, {b.measure}, {b.window}): {_dec(self.value)} > {_dec(self.limit)}")


def request_part(budget: Budget, units: Decimal, cost: Decimal, amount: Decimal) -> Decimal:
    """What a request adds to a budget it counts against: its billed amount, its estimated
    provider cost, or its units."""
    return amount if budget.measure == "billed" else cost if budget.measure == "cost" else units


def judge(uses: tuple[BudgetUse, ...], meter: str, properties: Mapping[str, Any] | None, units: Decimal,
          cost: Decimal, amount: Decimal, counters: Mapping[str, Decimal]
          ) -> tuple[list[BudgetHit], dict[str, Any] | None, dict[int, Decimal]]:
    """The budgets the request would pass (hard first, then soft, each by id), the tightest
    one it counts against (JSON, before the request), and its part in each (for its hold).
    ``counters``: the measures of ``from_counters`` budgets (``billed``, ``cost``, and
    ``units:<meter>``), committed and held."""
    hits: list[BudgetHit] = []
    parts: dict[int, Decimal] = {}
    best = None  # (remaining, amount, use, used) of the least remaining share
    for use in uses:
        b = use.budget
        prop = b.scope_property
        if prop is not None:  # in_scope, inlined (the hot path)
            found = properties.get(prop) if properties else None
            if found is None:
                continue
            if type(found) is str and prop not in LIST_PROPERTIES:
                if found != b.scope_value:
                    continue
            elif not in_scope(prop, b.scope_value, properties):
                continue
        measure = b.measure
        if measure == "units" and b.meter != meter:
            continue
        used = use.used
        if used is None:
            used = counters.get(f"units:{b.meter}" if measure == "units" else measure, ZERO)
        part = amount if measure == "billed" else cost if measure == "cost" else units
        parts[b.id] = part
        limit = b.amount
        if used + part > limit:
            hits.append(BudgetHit(b, used + part, limit, use.start, use.end))
        remaining = limit - used if used < limit else ZERO
        # the least remaining share (remaining / limit), ties by id: compared without dividing
        if best is None or remaining * best[1] < best[0] * limit:
            best = (remaining, limit, use, used)
    if len(hits) > 1:
        hits.sort(key=lambda h: (h.budget.enforcement != "hard", h.budget.id))
    if best is None:
        return hits, None, parts
    remaining, _, use, used = best
    last = _TIGHTEST.get(id(use))
    if last is not None and last[0] is use and last[1] == used:
        return hits, last[2], parts  # the same budget as used as before: the same answer (read-only)
    b = use.budget
    tightest = {**_json(b), "window_start": _iso(use.start), "resets_at": _iso(use.end), "used": _dec(used),
                "remaining": _dec(remaining)}
    if len(_TIGHTEST) > 10_000:
        _TIGHTEST.clear()
    _TIGHTEST[id(use)] = (use, used, tightest)
    return hits, tightest, parts


_TIGHTEST: dict[int, tuple] = {}  # id(use) -> (use, used, the tightest budget's JSON)


def passed(uses: tuple[BudgetUse, ...], counters: Mapping[str, Decimal], enforcement: str | None = None
           ) -> list[BudgetHit]:
    """The budgets whose usage (committed and held) already exceeds their amount, whatever
    their scope (no request: what ingested usage crossed), by id; ``enforcement``: only
    those (``soft``: the ones that alert). ``counters`` as ``judge`` takes them."""
    hits = []
    for use in uses:
        b = use.budget
        if enforcement is not None and b.enforcement != enforcement:
            continue
        used = use.used
        if used is None:
            used = counters.get(f"units:{b.meter}" if b.measure == "units" else b.measure, ZERO)
        if used > b.amount:
            hits.append(BudgetHit(b, used, b.amount, use.start, use.end))
    hits.sort(key=lambda h: h.budget.id)
    return hits


@lru_cache(maxsize=4096)
def _json(b: Budget) -> dict[str, Any]:
    return b.to_json()


@lru_cache(maxsize=4096)
def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")
