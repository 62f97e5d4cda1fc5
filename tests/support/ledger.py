"""Ledger scenarios shared by the ingestion tests: customers on token-api, their LLM calls
(optionally naming an agent task), the check that counters, task usage and rollups equal a recount,
the environment of a `billing events import` child, and the doors plan (agent tasks named
by `run`)."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from billing.ledger.accounts import Accounts
from billing.ledger.recount import recount_all
from tests.support.db import PLANS_DIR, counter_rows, rollup_rows, shipped_catalog, task_usage_rows

CATALOG = shipped_catalog()


def _setup(engine, customers=("acme", "beta")):
    acc = Accounts(engine, CATALOG)
    for c in customers:
        acc.create_customer(c, now=datetime(2026, 10, 1, tzinfo=UTC))
        acc.subscribe(c, "token-api", at=datetime(2026, 10, 1, tzinfo=UTC))


def _event(customer: str, event_id: str, i: int, task: str | None = None) -> dict:
    props = {"model": "claude-sonnet-4-5", "input_tokens": 100 + i, "output_tokens": 7, "feature": "f"}
    if task:
        props["task"] = task
    return {"id": event_id, "customer": customer, "type": "llm.call",
            "timestamp": f"2026-10-{1 + i % 19:02d}T12:00:00Z", "properties": props}


def task_rows(engine) -> dict[tuple[str, str], tuple[int, int, int]]:
    return task_usage_rows(engine)


def assert_derived_equal_recount(engine) -> None:
    """Counters, agent task usage and hourly rollups as every writer kept them equal what
    ``billing db recount`` rebuilds from the events."""
    counters, tasks, rollups = counter_rows(engine), task_rows(engine), rollup_rows(engine)
    with engine.begin() as conn:
        recount_all(conn, CATALOG)
    assert counter_rows(engine) == counters
    assert task_rows(engine) == tasks
    assert rollup_rows(engine) == rollups


def _cli_env(db: str) -> dict[str, str]:
    env = dict(os.environ, BILLING_DATABASE_URL=db, BILLING_PLANS_DIR=str(PLANS_DIR))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLANS_DIR.parent), env.get("PYTHONPATH")) if p)
    return env


DOORS_YAML = """
plan: doors
version: 1
name: Doors (tests)
effective_from: 2026-01-01T00:00:00Z
currency: USD
fees:
  - {type: flat, key: base, name: Base, amount: "10.00"}
meters:
  - {key: calls, event_type: llm.call, aggregation: count}
  - {key: input, event_type: llm.call, aggregation: sum, property: input_tokens}
  - {key: steps, event_type: agent.step, aggregation: count}
charges:
  - key: calls
    meter: calls
    included: {pooled: 4}
    price: {model: per_unit, unit_price: "0.10"}
  - {key: input, meter: input, price: {model: per_unit, unit_price: "0.000003"}}
  - key: steps
    meter: steps
    included: {pooled: 3}
    price: {model: per_unit, unit_price: "0.02"}
budget_alerts:
  thresholds_percent: [50, 100]
agent_limits:
  task_property: run
  max_steps: 100000
"""
