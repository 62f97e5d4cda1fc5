"""A subscription change that moves which property names an event's agent task (plans with
different ``agent_limits.task_property``) rebuilds the task usage of the events it moves,
as ``billing db recount`` would (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing.catalog import Catalog
from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from billing.ledger.recount import recount_all
from tests.support.db import PLANS_DIR, counter_rows
from tests.support.ledger import task_rows
from tests.support.ledger import DOORS_YAML  # agent_limits.task_property: run

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOW = datetime(2026, 10, 20, tzinfo=UTC)


@pytest.fixture
def catalog(tmp_path):
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "doors.yaml").write_text(DOORS_YAML)
    (plans / "token-api.yaml").write_text((PLANS_DIR / "token-api.yaml").read_text())  # task_property: task
    return Catalog.from_paths(plans)


def _events(day: int, n: int) -> list[dict]:
    return [{"id": f"d{day}-{i}", "customer": "acme", "type": "llm.call",
             "timestamp": f"2026-10-{day:02d}T12:00:00Z",
             "properties": {"model": "claude-sonnet-4-5", "input_tokens": 100 + i, "output_tokens": 5,
                            "task": "t1", "run": f"r{i % 2}"}} for i in range(n)]


def _assert_equal_recount(engine, catalog) -> None:
    counters, tasks = counter_rows(engine), task_rows(engine)
    with engine.begin() as conn:
        recount_all(conn, catalog)
    assert task_rows(engine) == tasks
    assert counter_rows(engine) == counters


@pytest.mark.parametrize("change", ["subscribe-back-dated", "change-plan-back-dated", "cancel-back-dated"])
def test_a_change_of_task_property_rebuilds_the_task_usage_it_moves(engine, catalog, change):  # noqa: F811
    acc = Accounts(engine, catalog)
    acc.create_customer("acme", now=OCT)
    ledger = Ledger(engine, catalog, clock=lambda: NOW, alerts=False)
    if change == "subscribe-back-dated":  # events before any subscription: task "t1" ("task")
        ledger.record(_events(8, 5) + _events(12, 4))
        acc.subscribe("acme", "doors", at=datetime(2026, 10, 10, tzinfo=UTC))  # from the 10th: "run"
        expected_tasks = {"t1": 5, "r0": 2, "r1": 2}
    elif change == "change-plan-back-dated":
        acc.subscribe("acme", "token-api", at=OCT)
        ledger.record(_events(8, 5) + _events(12, 4))
        acc.change_plan("acme", "doors", at=datetime(2026, 10, 10, tzinfo=UTC))
        expected_tasks = {"t1": 5, "r0": 2, "r1": 2}
    else:
        acc.subscribe("acme", "doors", at=OCT)
        ledger.record(_events(8, 5) + _events(12, 4))
        acc.cancel("acme", at=datetime(2026, 10, 10, tzinfo=UTC))  # after it: no plan, "task"
        expected_tasks = {"r0": 3, "r1": 2, "t1": 4}
    assert {t: s for (_c, t), (s, _k, _p) in task_rows(engine).items()} == expected_tasks
    _assert_equal_recount(engine, catalog)
    ledger.close()
