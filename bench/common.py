"""Benchmark helpers: fresh databases (SQLite file or a new PostgreSQL database)."""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import contextmanager

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def fresh_database(backend: str):
    """Yield a URL of an empty, migrated database; drop it afterwards."""
    from billing.store.db import upgrade

    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{os.path.join(tmp, 'bench.db')}"
            upgrade(url)
            yield url
        return
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(os.environ.get("BILLING_BENCH_POSTGRES_URL") or os.environ.get("BILLING_TEST_POSTGRES_URL") or DEFAULT_PG)
    name = f"billing_bench_{uuid.uuid4().hex[:10]}"
    admin = base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        from billing.store.db import engine_for

        engine_for.cache_clear()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# ``--guards`` (bench/check.py, bench/reserve.py): the support-chatbot plan with cost guards
# that are evaluated on every call but do not change its outcome for the seeded customers (a
# cap far above their cost, a margin floor that only alerts), seeded side by side with the
# plain plan so one run measures both.
GUARDED_PLAN = "support-chatbot-guarded"
_GUARDS = """
cost_guard:
  cost_cap: {amount: "1000000", on_breach: {policy: deny}}
  margin_floor: {percent: 0, on_breach: {policy: alert}}
"""


# and three scoped budgets per guarded customer (issue 15 item 2), each counting every call of
# the benchmarks (their calls and events carry ``SCOPE``) and none changing an outcome
SCOPE = {"team": "support", "user": "u-7", "feature": "support-chat"}
BUDGETS = (
    {"name": "team-cost-daily", "measure": "cost", "amount": "1000000", "window": "daily", "enforcement": "hard",
     "scope": {"property": "team", "value": "support"}},
    {"name": "user-messages-weekly", "measure": "units", "meter": "messages", "amount": "1000000000000",
     "window": "weekly", "enforcement": "hard", "scope": {"property": "user", "value": "u-7"}},
    {"name": "feature-billed-monthly", "measure": "billed", "amount": "1000000000", "window": "monthly",
     "scope": {"property": "feature", "value": "support-chat"}},
)


def add_budgets(engine, catalog, customers) -> None:
    """``BUDGETS`` for each of ``customers`` (through the service the API and CLI call)."""
    from billing.budgets.service import Budgets

    service = Budgets(engine, catalog)
    for cid in customers:
        for b in BUDGETS:
            service.create(cid, b)


def guarded_plans_dir(folder: str) -> str:
    """``folder`` holding the shipped plans plus ``GUARDED_PLAN``; returns its path."""
    import shutil

    plans = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plans")
    for name in os.listdir(plans):
        if name.endswith(".yaml"):
            shutil.copy(os.path.join(plans, name), folder)
    with open(os.path.join(plans, "support-chatbot.yaml")) as f:
        text = f.read()
    assert "plan: support-chatbot\n" in text
    with open(os.path.join(folder, f"{GUARDED_PLAN}.yaml"), "w") as f:
        f.write(text.replace("plan: support-chatbot\n", f"plan: {GUARDED_PLAN}\n") + _GUARDS)
    return folder
