"""Two-phase quota use over the database: ``check``, ``reserve``, ``commit``, ``release``.

``Quota(engine, catalog, ledger)`` reads the customer's usage state (usage counters, live
holds, rate windows, task usage, credits, dunning), asks the pure decision function
(``billing.quota.decide``) and, for ``reserve``, writes a hold.

The concurrency promise (N concurrent reservations against a remaining budget B never
grant more than B, across threads, processes and API servers sharing one database) comes
from serialising every reservation of one customer: the decision is taken and the hold is
written inside one transaction that holds the customer's lock —
``pg_advisory_xact_lock`` on PostgreSQL, the database write lock (``BEGIN IMMEDIATE``, set
up by ``billing.ledger.db.make_engine``) on SQLite. The state is read after the lock is
taken, so each reservation sees every hold granted before it.

Holds count while ``status = 'held' and expires_at > now``: an expired hold frees itself
without a sweeper. ``commit`` records the event through ``Ledger.record`` first and then
settles the hold, so usage is never under-counted in between (briefly double-counted at
most). ``commit`` is idempotent per reservation; ``reserve`` is idempotent per
``(customer, request_id)``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from billing.catalog import Catalog, Plan
from billing.errors import BillingError, ErrorCode
from billing.events import TOKEN_FIELDS
from billing.ledger.counters import to_micro
from billing.ledger.ingest import Ledger
from billing.ledger.models import (
    CreditBurn, CreditGrantRow, Customer, Invoice, SeatChange, Subscription, UsageCounter, UsageEventRow)
from billing.ledger.quota_models import AgentTaskUsage, BudgetAlertRow, QuotaHold, QuotaRateWindow, WebhookOutbox
from billing.ledger.types import from_us, to_us
from billing.money import dec_str
from billing.quota.alerts import Alert, reached
from billing.quota.decide import (
    Decision, MeterUsage, QuotaRequest, TaskUsage, UsageState, charge_spend, decide, included_units,
    plan_credit_amount)
from billing.rating.periods import BillingCycle, Period

MAX_QUANTITY = 10**12  # units, tokens, steps per request (fits the micro-unit BIGINT columns)
MAX_COST = 10**6  # provider cost per request (fits the pico BIGINT column)
MICRO = Decimal(1_000_000)
PICO = Decimal(10) ** 12
ZERO = Decimal(0)

_hold = QuotaHold.__table__
_rate = QuotaRateWindow.__table__
_task = AgentTaskUsage.__table__
_counter = UsageCounter.__table__
_sub = Subscription.__table__
_cust = Customer.__table__
_seat = SeatChange.__table__
_grant = CreditGrantRow.__table__
_burn = CreditBurn.__table__
_inv = Invoice.__table__
_event = UsageEventRow.__table__
_alert = BudgetAlertRow.__table__
_outbox = WebhookOutbox.__table__


@dataclass(frozen=True)
class Reservation:
    id: str | None  # None: denied, nothing held
    decision: Decision | dict
    expires_at: datetime | None = None
    replayed: bool = False  # an earlier reserve with the same request id
    status: str | None = None  # held | committed | released (None: denied)

    @property
    def granted(self) -> bool:
        return self.id is not None

    def to_json(self) -> dict[str, Any]:
        decision = self.decision.to_json() if isinstance(self.decision, Decision) else self.decision
        return {"reservation_id": self.id, "granted": self.granted,
                "expires_at": self.expires_at.isoformat().replace("+00:00", "Z") if self.expires_at else None,
                "replayed": self.replayed, "status": self.status if self.id else None, "decision": decision}


@dataclass(frozen=True)
class Context:
    """Who the customer is right now: plan, period, seats."""

    customer: str
    subscription_id: int
    plan: Plan
    period: Period
    seats: int
    credits: dict  # grant id -> (remaining balance, applies_to)
    payment_failed_at: datetime | None


def _lock_key(customer: str) -> int:
    return int.from_bytes(hashlib.blake2b(customer.encode(), digest_size=8).digest(), "big", signed=True)


def _upsert(conn: Connection, table, values: dict, keys: list[str], increments: dict[str, Any]) -> None:
    mod = pg_dialect if conn.dialect.name == "postgresql" else sqlite_dialect
    stmt = mod.insert(table).values(**values)
    stmt = stmt.on_conflict_do_update(index_elements=keys,
                                      set_={k: table.c[k] + v for k, v in increments.items()})
    conn.execute(stmt)


def _tokens_of(props: dict) -> int:
    total = 0
    for name in TOKEN_FIELDS:
        value = props.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            total += value
        elif isinstance(value, (float, str, Decimal)):
            try:
                total += int(Decimal(str(value)))
            except Exception:  # noqa: BLE001 - ingestion already validated quantities
                pass
    return total


class Quota:
    """Quota decisions and holds over one database."""

    def __init__(self, engine: Engine, catalog: Catalog, ledger: Ledger | None = None, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), default_ttl: float = 60.0,
                 max_ttl: float = 86_400.0, context_ttl: float = 0.0, alerts: bool = True):
        self.engine = engine
        self.catalog = catalog
        self.clock = clock
        self.ledger = ledger or Ledger(engine, catalog, clock=clock)
        self.default_ttl = default_ttl
        self.alerts = alerts  # evaluate budget alerts after commits and ingested events
        self._fired: set[tuple[str, int, str, Decimal]] = set()
        self.max_ttl = max_ttl
        self._pg = engine.dialect.name == "postgresql"
        self.read_engine = _reader(engine)  # lock-free reads for check / usage
        self.inline_reads = engine.dialect.name == "sqlite"  # reads are local: no need for a thread
        self._sqlite_path = (engine.url.database if engine.dialect.name == "sqlite"
                             and engine.url.database not in (None, "", ":memory:") else None)
        self._local = threading.local()
        # customer -> (valid until, Context): plan, period, seats, credits, dunning change rarely;
        # 0 disables the cache (every call reads them)
        self.context_ttl = context_ttl
        self._ctx_cache: dict[str, tuple[float, Context]] = {}
        ph = "%s" if self._pg else "?"
        self._sql_state = (
            "SELECT 'u', meter, units_micro, cost_pico, events FROM usage_counter "
            "WHERE customer_id = ? AND period_start = ? "
            "UNION ALL SELECT 'h', meter, SUM(units_micro), SUM(cost_pico), COUNT(*) FROM quota_hold "
            "WHERE customer_id = ? AND status = 'held' AND expires_at > ? AND period_start = ? GROUP BY meter "
            "UNION ALL SELECT 'r', charge, count, 0, 0 FROM quota_rate_window "
            "WHERE customer_id = ? AND window_start <= ? AND window_end > ?").replace("?", ph)
        self._sql_task = (
            "SELECT steps, tokens, cost_pico FROM agent_task_usage WHERE customer_id = ? AND task_id = ? "
            "UNION ALL SELECT SUM(steps), SUM(tokens), SUM(cost_pico) FROM quota_hold "
            "WHERE customer_id = ? AND task = ? AND status = 'held' AND expires_at > ?").replace("?", ph)

    # ----------------------------------------------------------------- state
    def _context(self, conn: Connection, customer: str, now: datetime) -> Context:
        row = conn.execute(select(_cust.c.timezone).where(_cust.c.id == customer)).first()
        if row is None:
            raise BillingError(f"unknown customer {customer!r}", code=ErrorCode.CUSTOMER_NOT_FOUND)
        tz = row[0]
        sub = conn.execute(
            select(_sub.c.id, _sub.c.plan_id, _sub.c.plan_version, _sub.c.anchor_at)
            .where(_sub.c.customer_id == customer, _sub.c.started_at <= now,
                   (_sub.c.ended_at.is_(None)) | (_sub.c.ended_at > now))
            .order_by(_sub.c.started_at.desc()).limit(1)).first()
        if sub is None:
            raise BillingError(f"customer {customer!r} has no active subscription",
                               code=ErrorCode.SUBSCRIPTION_NOT_FOUND)
        plan = self.catalog.get(sub.plan_id, sub.plan_version)
        anchor_at = sub.anchor_at if sub.anchor_at.tzinfo else sub.anchor_at.replace(tzinfo=UTC)
        cycle = BillingCycle(plan.billing.interval, plan.billing.anchor, tz,
                             anchor_at if plan.billing.anchor == "anniversary" else None)
        period = cycle.period_containing(now)
        changes = conn.execute(select(_seat.c.effective_at, _seat.c.seats)
                               .where(_seat.c.subscription_id == sub.id)
                               .order_by(_seat.c.effective_at, _seat.c.id)).all()
        at_start, peak = None, 0
        for at, seats in changes:
            at = at if at.tzinfo else at.replace(tzinfo=UTC)
            if at <= period.start:
                at_start = seats
            elif at < period.end and at <= now:
                peak = max(peak, seats)
        seats = max(peak, at_start if at_start is not None else (changes[0][1] if changes else 1))
        failed = conn.execute(select(func.min(_inv.c.payment_failed_at))
                              .where(_inv.c.customer_id == customer, _inv.c.status == "finalized",
                                     _inv.c.kind == "invoice", _inv.c.payment_failed_at.is_not(None))).scalar()
        if failed is not None and failed.tzinfo is None:
            failed = failed.replace(tzinfo=UTC)
        return Context(customer, sub.id, plan, period, seats, self._credit_balances(conn, customer, now), failed)

    def _cached(self, customer: str, now: datetime) -> Context | None:
        hit = self._ctx_cache.get(customer)
        if hit is not None and hit[0] > now.timestamp() and hit[1].period.start <= now < hit[1].period.end:
            return hit[1]
        return None

    def _context_cached(self, conn: Connection, customer: str, now: datetime) -> Context:
        if self.context_ttl <= 0:
            return self._context(conn, customer, now)
        hit = self._cached(customer, now)
        if hit is not None:
            return hit
        ctx = self._context(conn, customer, now)
        self._ctx_cache[customer] = (now.timestamp() + self.context_ttl, ctx)
        return ctx

    def forget(self, customer: str | None = None) -> None:
        """Drop cached contexts (after a subscription, seat or credit change)."""
        if customer is None:
            self._ctx_cache.clear()
        else:
            self._ctx_cache.pop(customer, None)

    def _state(self, conn: Connection, ctx: Context, now: datetime, task: str | None) -> UsageState:
        return self._state_raw(conn.connection.driver_connection, ctx, now, task)

    def _state_raw(self, dbapi_conn: Any, ctx: Context, now: datetime, task: str | None) -> UsageState:
        now_us = to_us(now)
        start_us = to_us(ctx.period.start)
        usage: dict[str, MeterUsage] = {}
        held: dict[str, MeterUsage] = {}
        rates: dict[str, int] = {}
        c = ctx.customer
        # raw DBAPI cursor: no statement compilation, and (for check, with a cached context)
        # no transaction of its own: one statement is one consistent snapshot
        cur = dbapi_conn.cursor()
        try:
            cur.execute(self._sql_state, (c, start_us, c, now_us, start_us, c, now_us, now_us))
            rows = cur.fetchall()
            if task is not None:
                cur.execute(self._sql_task, (c, task, c, task, now_us))
                task_rows = cur.fetchall()
        finally:
            cur.close()
        for kind, key, units, cost, n in rows:
            if kind == "u":
                usage[key] = MeterUsage(Decimal(units) / MICRO, Decimal(cost) / PICO, int(n))
            elif kind == "h":
                held[key] = MeterUsage(Decimal(int(units or 0)) / MICRO, Decimal(int(cost or 0)) / PICO, int(n))
            else:
                rates[key] = int(units)
        task_usage = None
        if task is not None:
            steps = tokens = cost_pico = 0
            for s_, t_, c_ in task_rows:
                steps += int(s_ or 0)
                tokens += int(t_ or 0)
                cost_pico += int(c_ or 0)
            task_usage = TaskUsage(steps, tokens, Decimal(cost_pico) / PICO)
        return UsageState(now=now, period_start=ctx.period.start, period_end=ctx.period.end, usage=usage, held=held,
                          seats=ctx.seats, credit_balances=ctx.credits, task=task_usage, rate_counts=rates,
                          payment_failed_at=ctx.payment_failed_at)

    def _credit_balances(self, conn: Connection, customer: str, now: datetime) -> dict:
        grants = conn.execute(select(_grant.c.id, _grant.c.amount_micro, _grant.c.applies_to, _grant.c.effective_at,
                                     _grant.c.expires_at).where(_grant.c.customer_id == customer)).all()
        if not grants:
            return {}
        burned = dict(conn.execute(select(_burn.c.grant_id, func.sum(_burn.c.amount_micro))
                                   .where(_burn.c.grant_id.in_([g.id for g in grants]))
                                   .group_by(_burn.c.grant_id)).all())
        out = {}
        for g in grants:
            eff = g.effective_at if g.effective_at.tzinfo else g.effective_at.replace(tzinfo=UTC)
            exp = g.expires_at
            if exp is not None and exp.tzinfo is None:
                exp = exp.replace(tzinfo=UTC)
            if eff > now or (exp is not None and exp <= now):
                continue
            balance = g.amount_micro - int(burned.get(g.id) or 0)
            if balance > 0:
                out[g.id] = (Decimal(balance) / MICRO, tuple(g.applies_to.split(",")) if g.applies_to else None)
        return out

    def _relaxed_durability(self, conn: Connection) -> None:
        """Settling or releasing a hold may skip the commit fsync on PostgreSQL: if a crash
        loses it, the hold simply stays held until it expires (over-counting, never over-
        granting). Reservations themselves are always durable."""
        if self._pg:
            conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")

    def _lock(self, conn: Connection, customer: str) -> None:
        if self._pg:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (_lock_key(customer),))
        # SQLite: the transaction already holds the database write lock (BEGIN IMMEDIATE)

    # ---------------------------------------------------------------- public
    def check(self, customer: str, key: str, quantity: Decimal | int | str = 1, *, model: str | None = None,
              task: str | None = None, tokens: int | None = None, cost: Decimal | int | str = 0,
              steps: int | None = None) -> Decision:
        """What would happen to this request now (read-only: holds nothing)."""
        now = self.clock()
        request = _request(customer, key, quantity, model, task, tokens, cost, steps)
        ctx = self._cached(customer, now) if self.context_ttl > 0 else None
        fast = self._fast_reader() if ctx is not None else None
        if fast is not None:  # SQLite, context cached: one statement on this thread's connection
            state = self._state_raw(fast, ctx, now, task)
        else:
            with self.read_engine.connect() as conn:
                ctx = self._context_cached(conn, customer, now)
                state = self._state(conn, ctx, now, task)
                conn.rollback()
        return decide(ctx.plan, state, request)

    def _fast_reader(self) -> Any:
        """This thread's own autocommit connection to the SQLite file (None elsewhere)."""
        if self._sqlite_path is None:
            return None
        conn = getattr(self._local, "conn", None)
        if conn is None:
            import sqlite3

            conn = sqlite3.connect(self._sqlite_path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def reserve(self, customer: str, key: str, quantity: Decimal | int | str = 1, *, ttl: float | None = None,
                request_id: str | None = None, model: str | None = None, task: str | None = None,
                tokens: int | None = None, cost: Decimal | int | str = 0, steps: int | None = None) -> Reservation:
        """Decide and, if allowed or downgraded, hold the units until commit, release or expiry."""
        ttl = self.default_ttl if ttl is None else float(ttl)
        if not 0 < ttl <= self.max_ttl:
            raise BillingError(f"ttl must be in (0, {self.max_ttl:g}] seconds", code=ErrorCode.VALIDATION)
        if request_id is not None and not 0 < len(request_id) <= 200:
            raise BillingError("request_id must be 1-200 characters", code=ErrorCode.VALIDATION)
        request = _request(customer, key, quantity, model, task, tokens, cost, steps)
        with self.engine.begin() as conn:
            self._lock(conn, customer)
            now = self.clock()
            if request_id is not None:
                row = conn.execute(select(_hold).where(_hold.c.customer_id == customer,
                                                       _hold.c.request_id == request_id)).first()
                if row is not None:
                    stored = json.loads(row.decision)
                    if stored.get("_request") != _request_json(request):
                        raise BillingError(f"request id {request_id!r} was used for another reservation",
                                           code=ErrorCode.CONFLICT)
                    stored.pop("_request", None)
                    return Reservation(row.id, stored, from_us(row.expires_at), replayed=True, status=row.status)
            ctx = self._context_cached(conn, customer, now)
            state = self._state(conn, ctx, now, task)
            decision = decide(ctx.plan, state, request)
            if not decision.granted:
                return Reservation(None, decision)
            now_us = to_us(now)
            hold_id = f"rsv_{uuid.uuid4().hex}"
            expires_us = now_us + int(ttl * 1_000_000)
            meter = ctx.plan.meter(decision.meter)
            task_tokens = request.tokens
            if task_tokens is None:
                task_tokens = int(request.quantity) if (meter.property or "").endswith("_tokens") else 0
            payload = decision.to_json()
            payload["_request"] = _request_json(request)
            conn.execute(_hold.insert().values(
                id=hold_id, customer_id=customer, request_id=request_id or hold_id, key=key, meter=decision.meter,
                event_type=meter.event_type, period_start=to_us(ctx.period.start),
                units_micro=to_micro(decision.units), cost_pico=int(request.cost * PICO),
                tokens=task_tokens if task else 0,
                steps=(request.steps if request.steps is not None else 1) if task else 0, task=task,
                model=decision.lane.model, tier=decision.lane.tier, outcome=decision.outcome,
                reason=decision.reason, decision=json.dumps(payload), status="held", created_at=now_us,
                expires_at=expires_us))
            for charge, start, end in decision.rate_windows:
                _upsert(conn, _rate, {"customer_id": customer, "charge": charge, "window_start": start,
                                      "window_end": end, "count": 1},
                        ["customer_id", "charge", "window_start"], {"count": 1})
        return Reservation(hold_id, decision, from_us(expires_us), status="held")

    def get(self, reservation_id: str) -> QuotaHold:
        with self.read_engine.connect() as conn:
            row = conn.execute(select(_hold).where(_hold.c.id == reservation_id)).first()
        if row is None:
            raise BillingError(f"unknown reservation {reservation_id!r}", code=ErrorCode.RESERVATION_NOT_FOUND)
        return QuotaHold(**row._mapping)

    def commit(self, reservation_id: str, event: dict | None = None) -> dict[str, Any]:
        """Record the actual usage (one event) and settle the hold. Idempotent.

        Defaults filled into the event: ``customer`` (the hold's), ``id`` (the reservation
        id), ``type`` (the meter's event type), ``timestamp`` (now), ``properties.model``
        (the lane's model) and the plan's task property (the hold's task)."""
        hold = self.get(reservation_id)
        if hold.status == "released":
            raise BillingError(f"reservation {reservation_id} was released; reserve again",
                               code=ErrorCode.RESERVATION_STATE)
        event = dict(event or {})
        if event.get("customer", hold.customer_id) != hold.customer_id:
            raise BillingError("the event's customer is not the reservation's", code=ErrorCode.VALIDATION)
        event["customer"] = hold.customer_id
        event.setdefault("id", hold.id)
        event.setdefault("type", hold.event_type)
        event.setdefault("timestamp", self.clock().isoformat())
        props = event.get("properties") or {}
        if not isinstance(props, dict):
            raise BillingError("event properties must be an object", code=ErrorCode.EVENT_INVALID)
        props = dict(props)
        if hold.model and "model" not in props:
            props["model"] = hold.model
        if hold.task:
            task_prop = self._task_property(hold.customer_id)
            props.setdefault(task_prop, hold.task)
        event["properties"] = props
        if hold.status == "committed" and hold.event_id != event["id"]:
            raise BillingError(f"reservation {reservation_id} was committed with event {hold.event_id!r}",
                               code=ErrorCode.RESERVATION_STATE)
        result = self.ledger.record([event]).results[0]
        if result.status in ("rejected", "conflict"):
            raise BillingError(result.message or result.status,
                               code=ErrorCode(result.code) if result.code else ErrorCode.EVENT_INVALID)
        now_us = to_us(self.clock())
        with self.engine.begin() as conn:
            self._relaxed_durability(conn)
            settled = conn.execute(update(_hold).where(_hold.c.id == reservation_id, _hold.c.status == "held")
                                   .values(status="committed", event_id=event["id"], settled_at=now_us)).rowcount
            if settled == 1 and hold.task and result.status == "accepted":
                self._add_task_usage(conn, hold.customer_id, hold.task, [event], now_us)
        if result.status == "accepted" and self.alerts:
            self.evaluate_alerts(hold.customer_id)
        return {"reservation_id": reservation_id, "event_id": event["id"], "status": "committed",
                "event": result.status}

    def release(self, reservation_id: str) -> dict[str, Any]:
        """Return the held units now (idempotent). A committed reservation cannot be released."""
        now_us = to_us(self.clock())
        with self.engine.begin() as conn:
            self._relaxed_durability(conn)
            done = conn.execute(update(_hold).where(_hold.c.id == reservation_id, _hold.c.status == "held")
                                .values(status="released", settled_at=now_us)).rowcount
            if done == 0:
                row = conn.execute(select(_hold.c.status).where(_hold.c.id == reservation_id)).first()
                if row is None:
                    raise BillingError(f"unknown reservation {reservation_id!r}",
                                       code=ErrorCode.RESERVATION_NOT_FOUND)
                if row.status != "released":
                    raise BillingError(f"reservation {reservation_id} is {row.status}",
                                       code=ErrorCode.RESERVATION_STATE)
        return {"reservation_id": reservation_id, "status": "released"}

    def purge_expired(self, older_than: timedelta = timedelta(days=1)) -> int:
        """Mark holds expired longer than ``older_than`` as released (housekeeping only:
        expired holds already stopped counting)."""
        cutoff = to_us(self.clock() - older_than)
        with self.engine.begin() as conn:
            return conn.execute(update(_hold).where(_hold.c.status == "held", _hold.c.expires_at <= cutoff)
                                .values(status="released", settled_at=cutoff)).rowcount

    # ------------------------------------------------------------ task usage
    def _task_property(self, customer: str) -> str:
        with self.read_engine.connect() as conn:
            ctx = self._context_cached(conn, customer, self.clock())
        return ctx.plan.agent_limits.task_property if ctx.plan.agent_limits else "task"

    def _add_task_usage(self, conn: Connection, customer: str, task: str, events: list[dict], now_us: int) -> None:
        ids = [e["id"] for e in events]
        cost = conn.execute(select(func.sum(_event.c.cost_pico))
                            .where(_event.c.customer_id == customer, _event.c.event_id.in_(ids))).scalar() or 0
        tokens = sum(_tokens_of(e.get("properties") or {}) for e in events)
        _upsert(conn, _task, {"customer_id": customer, "task_id": task, "steps": len(events), "tokens": tokens,
                              "cost_pico": int(cost), "updated_at": now_us},
                ["customer_id", "task_id"], {"steps": len(events), "tokens": tokens, "cost_pico": int(cost)})

    def note_events(self, events: list[Any], results: Iterable[Any]) -> None:
        """After ``Ledger.record`` of events sent directly (not through ``commit``): count
        accepted events that carry a task property into agent task usage, and evaluate the
        budget alerts of their customers."""
        by_task: dict[tuple[str, str], list[dict]] = {}
        props_names: dict[str, str] = {}
        for r in results:
            if r.status != "accepted":
                continue
            raw = events[r.index]
            if not isinstance(raw, dict):
                continue
            customer = raw["customer"]
            if customer not in props_names:
                try:
                    props_names[customer] = self._task_property(customer)
                except BillingError:
                    props_names[customer] = "task"
            task = (raw.get("properties") or {}).get(props_names[customer])
            if task is not None:
                by_task.setdefault((customer, str(task)), []).append(raw)
        if by_task:
            now_us = to_us(self.clock())
            with self.engine.begin() as conn:
                for (customer, task), evs in by_task.items():
                    self._add_task_usage(conn, customer, task, evs, now_us)
        if self.alerts:
            for customer in props_names:
                try:
                    self.evaluate_alerts(customer)
                except BillingError:  # no active subscription: nothing to alert on
                    pass

    # ---------------------------------------------------------------- alerts
    def evaluate_alerts(self, customer: str) -> list[Alert]:
        """Record budget thresholds newly reached this period and queue one webhook for each
        (``budget.threshold_reached``, dedupe id ``budget:<customer>:<period>:<subject>:<pct>``).
        Returns the alerts that fired now (each fires once per period)."""
        now = self.clock()
        with self.read_engine.connect() as conn:
            ctx = self._context_cached(conn, customer, now)
            if ctx.plan.budget_alerts is None:
                return []
            state = self._state(conn, ctx, now, None)
            conn.rollback()
        start_us, now_us = to_us(ctx.period.start), to_us(now)
        # thresholds known to have fired (this process saw them in the table) are skipped
        hits = [a for a in reached(ctx.plan, state)
                if (customer, start_us, a.subject, a.threshold) not in self._fired]
        if not hits:
            return []
        mod = pg_dialect if self._pg else sqlite_dialect
        fired: list[Alert] = []
        seen: list[tuple] = []
        with self.engine.begin() as conn:
            for alert in hits:
                threshold = dec_str(alert.threshold)
                new = conn.execute(mod.insert(_alert).values(
                    customer_id=customer, period_start=start_us, subject=alert.subject, threshold=threshold,
                    value=dec_str(alert.value), limit=dec_str(alert.limit), fired_at=now_us)
                    .on_conflict_do_nothing()).rowcount
                seen.append((customer, start_us, alert.subject, alert.threshold))
                if new != 1:
                    continue
                fired.append(alert)
                dedupe = f"budget:{customer}:{start_us}:{alert.subject}:{threshold}"
                payload = {"id": dedupe, "type": "budget.threshold_reached", "customer": customer,
                           "plan": {"id": ctx.plan.plan, "version": ctx.plan.version},
                           "period": {"start": _iso(ctx.period.start), "end": _iso(ctx.period.end)},
                           "created_at": _iso(now), **alert.to_json()}
                Outbox.enqueue(conn, dedupe, customer, "budget.threshold_reached", payload, now_us)
        if len(self._fired) > 100_000:
            self._fired.clear()
        self._fired.update(seen)  # only once the transaction committed
        return fired

    # ----------------------------------------------------------------- usage
    def usage(self, customer: str) -> dict[str, Any]:
        """The customer's current period: per charge used / held / included / remaining,
        spend so far, credits, and the live holds count."""
        now = self.clock()
        with self.read_engine.connect() as conn:
            ctx = self._context(conn, customer, now)
            state = self._state(conn, ctx, now, None)
            conn.rollback()
        plan = ctx.plan
        charges = []
        total = ZERO
        for charge in plan.charges:
            used = state.usage.get(charge.meter, MeterUsage())
            held = state.held.get(charge.meter, MeterUsage())
            both = used + held
            inc = included_units(charge, ctx.seats)
            spend = charge_spend(charge, both.units, both.cost, both.events, inc)
            cap = getattr(charge.on_exhaustion, "spend_cap", None)
            if cap is not None:
                spend = min(spend, cap)
            total += spend
            charges.append({"charge": charge.key, "meter": charge.meter, "policy": charge.on_exhaustion.policy,
                            "used": dec_str(used.units), "held": dec_str(held.units),
                            "included": dec_str(inc) if charge.included is not None else None,
                            "remaining_included": dec_str(max(ZERO, inc - both.units))
                            if charge.included is not None else None,
                            "spend": dec_str(spend), "spend_cap": None if cap is None else dec_str(cap)})
        meters = {m.key: {"used": dec_str(state.usage.get(m.key, MeterUsage()).units),
                          "held": dec_str(state.held.get(m.key, MeterUsage()).units),
                          "events": state.usage.get(m.key, MeterUsage()).events,
                          "provider_cost": dec_str(state.usage.get(m.key, MeterUsage()).cost)}
                  for m in plan.meters}
        credits = sum((a for a, _ in plan_credit_amount(plan, ctx.seats)), ZERO) + sum(
            (a for a, _ in state.credit_balances.values()), ZERO)
        return {"customer": customer, "plan": {"id": plan.plan, "version": plan.version},
                "currency": plan.currency, "seats": ctx.seats,
                "period": {"start": _iso(ctx.period.start), "end": _iso(ctx.period.end)},
                "meters": meters, "charges": charges, "spend": dec_str(total),
                "spend_cap": None if plan.spend_cap is None else dec_str(plan.spend_cap),
                "credits": dec_str(credits), "credits_remaining": dec_str(max(ZERO, credits - total)),
                "payment_overdue": state.payment_failed_at is not None and now - state.payment_failed_at
                >= timedelta(days=plan.dunning.deny_after_days)}


def _reader(engine: Engine) -> Engine:
    """An engine for reads that never take a lock. On a SQLite file: autocommit connections
    without ``BEGIN IMMEDIATE`` (in WAL mode a SELECT reads a snapshot and never waits for a
    writer), so checks are not queued behind an ingestion batch. Elsewhere: ``engine``."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return engine
    from sqlalchemy import create_engine, event

    reader = create_engine(engine.url, connect_args={"timeout": 30, "check_same_thread": False},
                           pool_size=20, max_overflow=40)

    @event.listens_for(reader, "connect")
    def _autocommit(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return reader


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _request(customer, key, quantity, model, task, tokens, cost, steps) -> QuotaRequest:
    from billing.money import to_decimal

    try:
        q = to_decimal(quantity)
        c = to_decimal(cost)
    except Exception:  # noqa: BLE001
        raise BillingError("quantity and cost must be numbers", code=ErrorCode.VALIDATION) from None
    if not (0 <= q <= MAX_QUANTITY and 0 <= c <= MAX_COST):
        raise BillingError(f"quantity must be in [0, {MAX_QUANTITY}] and cost in [0, {MAX_COST}]",
                           code=ErrorCode.VALIDATION)
    for name, value in (("tokens", tokens), ("steps", steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value <= MAX_QUANTITY):
            raise BillingError(f"{name} must be an integer in [0, {MAX_QUANTITY}]", code=ErrorCode.VALIDATION)
    return QuotaRequest(customer, key, q, model, task, tokens, c, steps)


def _request_json(r: QuotaRequest) -> dict:
    return {"key": r.key, "quantity": dec_str(r.quantity), "model": r.model, "task": r.task, "tokens": r.tokens,
            "cost": dec_str(r.cost), "steps": r.steps}



class Outbox:
    """The webhook outbox (at-least-once): rows are queued in the transaction that decides
    to send them; dispatchers claim due rows with a lease (a conditional update, so two
    dispatchers never send the same row at once), then mark them delivered or reschedule
    them with backoff. Receivers dedupe on ``dedupe_id``."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.engine = engine
        self.clock = clock

    @staticmethod
    def enqueue(conn: Connection, dedupe_id: str, customer: str, type_: str, payload: dict, now_us: int) -> bool:
        mod = pg_dialect if conn.dialect.name == "postgresql" else sqlite_dialect
        return conn.execute(mod.insert(_outbox).values(
            dedupe_id=dedupe_id, customer_id=customer, type=type_, payload=json.dumps(payload, default=str),
            status="pending", attempts=0, next_attempt_at=now_us, created_at=now_us)
            .on_conflict_do_nothing()).rowcount == 1

    def claim_due(self, limit: int = 100, lease_seconds: float = 60.0) -> list[dict]:
        now_us = to_us(self.clock())
        lease_us = now_us + int(lease_seconds * 1_000_000)
        with self.engine.connect() as conn:
            rows = conn.execute(select(_outbox.c.id, _outbox.c.next_attempt_at)
                                .where(_outbox.c.status == "pending", _outbox.c.next_attempt_at <= now_us)
                                .order_by(_outbox.c.next_attempt_at, _outbox.c.id).limit(limit)).all()
            conn.rollback()
        claimed = []
        for row in rows:
            with self.engine.begin() as conn:
                ok = conn.execute(update(_outbox).where(_outbox.c.id == row.id, _outbox.c.status == "pending",
                                                        _outbox.c.next_attempt_at == row.next_attempt_at)
                                  .values(next_attempt_at=lease_us)).rowcount
                if ok:
                    full = conn.execute(select(_outbox).where(_outbox.c.id == row.id)).first()
                    claimed.append(dict(full._mapping))
        return claimed

    def delivered(self, row_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(_outbox).where(_outbox.c.id == row_id)
                         .values(status="delivered", delivered_at=to_us(self.clock()),
                                 attempts=_outbox.c.attempts + 1, last_error=None))

    def failed(self, row_id: int, error: str, retry_in: float | None) -> None:
        """Reschedule after ``retry_in`` seconds, or give up (``dead``) when None."""
        now_us = to_us(self.clock())
        values: dict[str, Any] = {"attempts": _outbox.c.attempts + 1, "last_error": error[:500]}
        if retry_in is None:
            values["status"] = "dead"
        else:
            values["next_attempt_at"] = now_us + int(retry_in * 1_000_000)
        with self.engine.begin() as conn:
            conn.execute(update(_outbox).where(_outbox.c.id == row_id).values(**values))

    def rows(self, status: str | None = None) -> list[dict]:
        query = select(_outbox).order_by(_outbox.c.id)
        if status is not None:
            query = query.where(_outbox.c.status == status)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]
