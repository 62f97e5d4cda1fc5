"""Budget alerts after usage is committed: the impure half of ``billing.quota.alerts``.

Every door into the ledger (``Ledger.record``: the HTTP batch, ``billing events import``,
the Python client; and quota commits) calls ``BudgetAlerts`` after its transaction
committed, for the customers it recorded usage of. Each threshold of a period fires once:
the ``budget_alert`` row's primary key decides, and the same transaction queues one
``alert.triggered`` webhook in the outbox (``billing.alerts.events.enqueue_alert``; rule
``threshold``, ``cost_guard`` for a cost cap, ``whale`` for a margin floor or cost above
revenue). The customers' soft scoped budgets (``billing.quota.budgets``) are read in the same
pass: each one their usage passed records one ``budget_alert`` (subject ``budget:<id>``, per
window) and queues one ``alert.triggered`` (rule ``budget``), as a reservation crossing it
does (``budget_crossed``). Evaluating after the commit (never
inside it) means that of two racing writers at least one sees both writes: a threshold is
never missed, and a failed evaluation never loses usage (the next write evaluates again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from billing.catalog import Catalog
from billing.errors import BillingError
from billing.alerts.events import enqueue_alert, iso
from billing.store.operational_models import BudgetAlertRow, BudgetRow
from billing.reservations.budget_sql import BudgetReader
from billing.reservations.sql import (
    MICRO, PICO, Connections, Context, batch_counters_query, counter_values, load_contexts, make_state, parse_state,
    run_all, state_query, usage_state)
from billing.store.types import to_us
from billing.money import dec_str
from billing.ledger.counters import ALL_EVENTS
from billing.quota.alerts import Alert, alerts_on, reached
from billing.quota.budgets import passed
from billing.quota.decide import MeterUsage, UsageState
from billing.quota.usage import budget_counters

log = logging.getLogger("billing.alerts")

_alert = BudgetAlertRow.__table__
_budget = BudgetRow.__table__
SOFT_TTL_S = 2.0


class BudgetAlerts:
    """Evaluates and records budget thresholds over one database."""

    def __init__(self, engine: Engine, catalog: Catalog, clock: Callable[[], datetime]):
        self.engine = engine
        self.catalog = catalog
        self.clock = clock
        self.pg = engine.dialect.name == "postgresql"
        # the quota reads' dialect rules (placeholders, pipelines) over the engine's own pool:
        # no connections of its own to keep open
        self._dialect = Connections(engine)
        self._fired: set[tuple[str, int, str, Decimal]] = set()
        self._crossed: set[tuple[str, int, int]] = set()  # (customer, budget id, window start): recorded
        self.budget_reader = BudgetReader()  # soft budgets' committed events, read incrementally
        self._soft: frozenset[str] = frozenset()
        self._soft_until = 0.0
        # (driver connection, customers, now) -> contexts: a Quota over the same ledger hands
        # its cached ones (``Quota.contexts``: plan, period and seats live ``context_ttl``)
        self.contexts: Callable[[Any, list[str], datetime], dict] | None = None

    def evaluate_budgets(self, customers: Iterable[str]) -> list[str]:
        """The soft scoped budgets of ``customers`` their usage passed, recorded once per
        budget and window (``budget_crossed``); returns the keys of the crossings that fired now."""
        wanted = sorted(set(customers))
        if not wanted:
            return []
        now = self.clock()
        with self.engine.connect() as pooled:
            conn = pooled.connection.driver_connection
            found = load_contexts(self._dialect, conn, self.catalog, wanted, now)
            crossed = [(c.customer, hits) for c in found.values() if not isinstance(c, BillingError)
                       and any(b.enforcement == "soft" for b in c.budgets) and (hits := self._soft_passed(conn, c, now))]
        fired: list[str] = []
        for customer, hits in crossed:
            fired += self.budget_crossed(customer, hits, now)
        return fired

    def soft_customers(self, fresh: bool = False) -> frozenset[str]:
        """The customers with a soft budget (ingestion evaluates them whatever their plan),
        read again at most every ``SOFT_TTL_S`` seconds (a budget created since alerts from
        then on; the worker's ``alerts`` job sweeps them all)."""
        now = time.monotonic()
        if fresh or now >= self._soft_until:
            with self.engine.connect() as conn:
                self._soft = frozenset(conn.execute(select(_budget.c.customer_id).distinct()
                                                    .where(_budget.c.enforcement == "soft")).scalars())
            self._soft_until = now + SOFT_TTL_S
        return self._soft

    def close(self) -> None:
        """Nothing to close (connections come from the engine's pool)."""

    def evaluate(self, customers: Iterable[str]) -> list[Alert]:
        """Thresholds newly reached by ``customers`` in their current period: recorded, each
        with its webhook queued. Customers without an active subscription (or whose plan has
        no ``budget_alerts``) are skipped. Returns the alerts that fired now."""
        wanted = sorted(set(customers))
        if not wanted:
            return []
        now = self.clock()
        conns = self._dialect
        with self.engine.connect() as pooled:
            conn = pooled.connection.driver_connection
            found = (self.contexts(conn, wanted, now) if self.contexts is not None
                     else load_contexts(conns, conn, self.catalog, wanted, now))
            live = [c for c in found.values() if not isinstance(c, BillingError)]
            # soft scoped budgets passed by ingested usage (a reserve alerts on its own)
            crossed = [(c.customer, hits) for c in live if any(b.enforcement == "soft" for b in c.budgets)
                       and (hits := self._soft_passed(conn, c, now))]
            ctxs = [c for c in live if alerts_on(c.plan)]
            if not ctxs:
                for customer, hits in crossed:
                    self.budget_crossed(customer, hits, now)
                return []
            # plans whose charged meters the counters rate exactly: their counters, all at once;
            # the others (event-read meters: disputes, unique counts, per-transaction
            # percentages) the quota's own state statement, folded as decisions fold it
            exact = [c for c in ctxs if c.plan.compiled.event_read_meters]
            plain = [c for c in ctxs if not c.plan.compiled.event_read_meters]
            now_us = to_us(now)
            queries = [state_query(c, now_us, self.pg) for c in exact]
            if plain:
                queries.append(batch_counters_query(self.pg, sorted((c.customer, to_us(c.period.start)) for c in plain)))
            results = run_all(conns, conn, queries)
        usage: dict[str, dict[str, MeterUsage]] = {c.customer: {} for c in ctxs}
        for ctx, rows in zip(exact, results):
            usage[ctx.customer] = make_state(ctx, now, parse_state(rows)[0], {}, {}, None).usage
        if plain:
            for customer, meter, units, cost, n in counter_values(results[-1]):
                usage[customer][meter] = MeterUsage(Decimal(units) / MICRO, Decimal(cost) / PICO, int(n))
        fired: list[Alert] = []
        for ctx in ctxs:
            fired += self.record(ctx, usage[ctx.customer], now)
        for customer, hits in crossed:
            self.budget_crossed(customer, hits, now)
        return fired

    def _soft_passed(self, conn: Any, ctx: Context, now: datetime) -> list[Any]:
        """The soft budgets of ``ctx`` its usage (committed and held) passed, not yet known
        to have fired in this process (``budgets.passed``: the rule)."""
        state = usage_state(self._dialect, conn, ctx, now, None, self.budget_reader)
        hits = passed(state.budgets, budget_counters(ctx.plan, state), "soft")
        return [h for h in hits if (ctx.customer, h.budget.id, to_us(h.start)) not in self._crossed]

    def evaluate_quietly(self, customers: Iterable[str]) -> None:
        """``evaluate`` after a write that already committed: a failure is logged, never
        raised (the usage is recorded; the customer's next write evaluates again)."""
        try:
            self.evaluate(customers)
        except Exception:  # noqa: BLE001
            log.exception("budget alert evaluation failed (it runs again on the next write)")

    def record_quietly(self, ctx: Context, usage: dict[str, MeterUsage], now: datetime) -> None:
        """``record`` after a write that already committed (a quota commit that read the
        usage in its own batch): a failure is logged, never raised."""
        try:
            self.record(ctx, usage, now)
        except Exception:  # noqa: BLE001
            log.exception("budget alert evaluation failed (it runs again on the next write)")

    def record(self, ctx: Context, usage: dict[str, MeterUsage], now: datetime) -> list[Alert]:
        """Record the thresholds ``usage`` reaches in ``ctx``'s period (each once)."""
        if not alerts_on(ctx.plan):
            return []
        customer = ctx.customer
        everything = usage.get(ALL_EVENTS)
        state = UsageState(now=now, period_start=ctx.period.start, period_end=ctx.period.end, usage=usage,
                           seats=ctx.seats, credit_balances=ctx.credits,
                           provider_cost=everything.cost if everything is not None else Decimal(0))
        start_us, now_us = to_us(ctx.period.start), to_us(now)
        # thresholds known to have fired (this process saw them in the table) are skipped
        hits = [a for a in reached(ctx.plan, state)
                if (customer, start_us, a.subject, a.threshold) not in self._fired]
        if not hits:
            return []
        mod = pg_dialect if self.pg else sqlite_dialect
        fired: list[Alert] = []
        seen: list[tuple] = []
        with self.engine.begin() as conn:
            for alert in sorted(hits, key=lambda a: (a.subject, a.threshold)):  # key order
                threshold = dec_str(alert.threshold)
                # RETURNING, not rowcount: SQLAlchemy reports -1 for this INSERT on psycopg
                new = conn.execute(mod.insert(_alert).values(
                    customer_id=customer, period_start=start_us, subject=alert.subject, threshold=threshold,
                    value=dec_str(alert.value), limit=dec_str(alert.limit), fired_at=now_us)
                    .on_conflict_do_nothing().returning(_alert.c.customer_id)).first() is not None
                seen.append((customer, start_us, alert.subject, alert.threshold))
                if not new:
                    continue
                fired.append(alert)
                enqueue_alert(conn, customer=customer, rule=rule_of(alert.subject),
                              key=f"{start_us}:{alert.subject}:{threshold}", data=_data(ctx, alert), at=now)
        if len(self._fired) > 100_000:
            self._fired.clear()
        self._fired.update(seen)  # only once the transaction committed
        return fired

    def budget_crossed(self, customer: str, hits: Iterable[Any], now: datetime) -> list[str]:
        """Record the soft budgets (``billing.quota.budgets``) a granted call or ingested usage
        passed, once per budget and window: a ``budget_alert`` row (subject ``budget:<id>``, the window's start)
        and one ``alert.triggered`` webhook (rule ``budget``). THE call site of a scoped budget's
        alert. Returns the keys of the crossings that fired now."""
        mod = pg_dialect if self.pg else sqlite_dialect
        now_us = to_us(now)
        fired: list[str] = []
        seen: list[tuple[str, int, int]] = []
        with self.engine.begin() as conn:
            for hit in sorted(hits, key=lambda h: h.budget.id):  # key order
                b = hit.budget
                start_us = to_us(hit.start)
                subject = f"budget:{b.id}"
                new = conn.execute(mod.insert(_alert).values(
                    customer_id=customer, period_start=start_us, subject=subject, threshold="100",
                    value=dec_str(hit.value), limit=dec_str(hit.limit), fired_at=now_us)
                    .on_conflict_do_nothing().returning(_alert.c.customer_id)).first() is not None
                seen.append((customer, b.id, start_us))
                if not new:
                    continue
                key = f"{b.id}:{start_us}:100"
                enqueue_alert(conn, customer=customer, rule="budget", key=key, at=now, data={
                    "budget": b.to_json(), "window": {"start": iso(hit.start), "end": iso(hit.end)},
                    "subject": subject, "threshold_percent": "100", "value": dec_str(hit.value),
                    "limit": dec_str(hit.limit), "unit": b.measure})
                fired.append(key)
        if len(self._crossed) > 100_000:
            self._crossed.clear()
        self._crossed.update(seen)  # only once the transaction committed
        return fired

    def budget_crossed_quietly(self, customer: str, hits: Iterable[Any], now: datetime) -> None:
        try:
            self.budget_crossed(customer, hits, now)
        except Exception:  # noqa: BLE001
            log.exception("budget alert recording failed")


def rule_of(subject: str) -> str:
    if subject == "cost_guard:cost_cap":
        return "cost_guard"
    if subject in ("cost_guard:margin_floor", "whale"):
        return "whale"
    return "threshold"


def _data(ctx: Context, alert: Alert) -> dict[str, Any]:
    return {"plan": {"id": ctx.plan.plan, "version": ctx.plan.version},
            "period": {"start": iso(ctx.period.start), "end": iso(ctx.period.end)}, **alert.to_json()}
