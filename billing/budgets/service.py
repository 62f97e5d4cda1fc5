"""Budgets through the API and CLI: create (validated, all or nothing), list, delete."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine

from billing.budgets import repository as repo
from billing.catalog import Catalog
from billing.errors import BillingError, ErrorCode
from billing.quota.budgets import Budget, parse_budget
from billing.reservations.sql import Connections, load_context
from billing.store.types import to_us

MAX_BUDGETS = 100  # per customer


class Budgets:
    def __init__(self, engine: Engine, catalog: Catalog, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.engine = engine
        self.catalog = catalog
        self.clock = clock

    def create(self, customer: str, data: Mapping[str, Any]) -> tuple[Budget, list[dict[str, str]]]:
        """A new budget and its warnings (``property_not_seen``: no event of the customer
        carries the scope's property yet). Every problem is a ``validation_error`` naming
        the field; nothing is written unless everything is right."""
        budget = parse_budget(data)
        now = self.clock()
        with self.engine.begin() as conn:
            if not repo.lock_customer(conn, customer):  # creates for one customer in turn (name, cap)
                raise BillingError(f"unknown customer {customer!r}", code=ErrorCode.CUSTOMER_NOT_FOUND)
            if budget.measure == "units":
                self._check_meter(conn, customer, budget, now)
            if repo.name_taken(conn, customer, budget.name):
                raise BillingError(f"name: customer {customer!r} has a budget named {budget.name!r} already",
                                   code=ErrorCode.CONFLICT, details={"problems": ["name: taken"]})
            if len(repo.budgets_of(conn, customer)) >= MAX_BUDGETS:
                raise BillingError(f"customer {customer!r} has {MAX_BUDGETS} budgets: delete one first",
                                   code=ErrorCode.VALIDATION)
            new_id = repo.insert_budget(conn, customer, budget, to_us(now))
            warnings = []
            if budget.scope_property is not None and not repo.property_seen(conn, customer, budget.scope_property):
                warnings.append({"code": "property_not_seen",
                                 "message": f"scope.property: no event of customer {customer!r} carries "
                                            f"{budget.scope_property!r} yet; the budget counts only events that do"})
        return replace(budget, id=new_id), warnings

    def _check_meter(self, conn, customer: str, budget: Budget, now: datetime) -> None:
        try:
            ctx = load_context(Connections(self.engine), conn.connection.driver_connection, self.catalog, customer, now)
        except BillingError:
            raise BillingError("meter: the customer has no active subscription whose plan has the meter",
                               code=ErrorCode.VALIDATION, details={"problems": ["meter: no active plan"]}) from None
        if budget.meter not in ctx.plan.compiled.meter_by_key:
            known = ", ".join(sorted(ctx.plan.compiled.meter_by_key))
            problem = f"meter: plan {ctx.plan.plan} has no meter {budget.meter!r} (its meters: {known})"
            raise BillingError(problem, code=ErrorCode.VALIDATION, details={"problems": [problem]})

    def list(self, customer: str) -> list[Budget]:
        with self.engine.connect() as conn:
            if not repo.customer_exists(conn, customer):
                raise BillingError(f"unknown customer {customer!r}", code=ErrorCode.CUSTOMER_NOT_FOUND)
            return [_budget(r) for r in repo.budgets_of(conn, customer)]

    def delete(self, customer: str, budget_id: int) -> None:
        with self.engine.begin() as conn:
            if not repo.delete_budget(conn, customer, budget_id):
                raise BillingError(f"customer {customer!r} has no budget {budget_id}", code=ErrorCode.BUDGET_NOT_FOUND)


def _budget(r: Any) -> Budget:
    return Budget(r.id, r.name, r.measure, Decimal(r.amount), r.reset_window, r.enforcement, r.policy,
                  r.scope_property, r.scope_value, r.meter, r.model, r.timezone)
