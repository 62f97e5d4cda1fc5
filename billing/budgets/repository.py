"""The ``budget`` rows and what the service asks of the events (a property ever carried)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, select, text

from billing.quota.budgets import Budget
from billing.store.aggregate_sql import _Sql
from billing.store.models import Customer
from billing.store.operational_models import BudgetRow

_budget = BudgetRow.__table__
_customer = Customer.__table__


def customer_exists(conn: Connection, customer: str) -> bool:
    return conn.execute(select(_customer.c.id).where(_customer.c.id == customer)).first() is not None


def lock_customer(conn: Connection, customer: str) -> bool:
    """Whether the customer exists, its row locked until the transaction ends (PostgreSQL:
    ``FOR NO KEY UPDATE``, which foreign-key checks do not wait for) so that two creates of
    its budgets run one after the other: the name check and the cap see each other's row."""
    stmt = select(_customer.c.id).where(_customer.c.id == customer).with_for_update(key_share=True)
    return conn.execute(stmt).first() is not None


def insert_budget(conn: Connection, customer: str, b: Budget, now_us: int) -> int:
    return conn.execute(insert(_budget).values(
        customer_id=customer, name=b.name, measure=b.measure, amount=f"{b.amount:f}", reset_window=b.window,
        enforcement=b.enforcement, policy=b.policy, scope_property=b.scope_property, scope_value=b.scope_value,
        meter=b.meter, model=b.model, timezone=b.timezone, created_at=now_us).returning(_budget.c.id)).scalar_one()


def name_taken(conn: Connection, customer: str, name: str) -> bool:
    return conn.execute(select(_budget.c.id).where(_budget.c.customer_id == customer,
                                                   _budget.c.name == name)).first() is not None


def budgets_of(conn: Connection, customer: str) -> list[Any]:
    return list(conn.execute(select(_budget).where(_budget.c.customer_id == customer).order_by(_budget.c.id)))


def delete_budget(conn: Connection, customer: str, budget_id: int) -> bool:
    return conn.execute(delete(_budget).where(_budget.c.customer_id == customer, _budget.c.id == budget_id)
                        .returning(_budget.c.id)).first() is not None


def property_seen(conn: Connection, customer: str, prop: str) -> bool:
    """Whether any event of the customer carries the property (a budget on it can count)."""
    sql = _Sql(conn.dialect.name)
    cond = sql.text(prop).replace("e.", "usage_event.")
    return conn.execute(text(f"SELECT 1 FROM usage_event WHERE customer_id = :c AND {cond} IS NOT NULL LIMIT 1"),
                        {"c": customer}).first() is not None
