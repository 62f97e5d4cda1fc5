"""Benchmark helpers: fresh databases (SQLite file or a new PostgreSQL database)."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
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
    # BILLING_BENCH_TAG (or BILLING_BENCH_DB_TAG): a word in the name (engineers sharing one server tell theirs apart)
    tag = "".join(c for c in (os.environ.get("BILLING_BENCH_TAG") or os.environ.get("BILLING_BENCH_DB_TAG", "")).lower() if c.isalnum())[:20]
    name = f"{base.database or 'billing'}_bench_{tag + '_' if tag else ''}{uuid.uuid4().hex[:10]}"  # the test database's name: its owner's
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


def copy_customers(engine, template: str, customers: list[str], chunk: int = 10_000) -> None:
    """New customers whose rows (customer, subscription, seat change) are copies of
    ``template``'s, which ``Accounts`` wrote: a large population without a transaction
    each. Written in customer order."""
    from sqlalchemy import insert, select

    from billing.store.models import Customer, SeatChange, Subscription

    customer_t, sub_t, seat_t = Customer.__table__, Subscription.__table__, SeatChange.__table__
    with engine.connect() as conn:
        base = dict(conn.execute(select(customer_t).where(customer_t.c.id == template)).mappings().one())
        subscriptions = conn.execute(select(sub_t).where(sub_t.c.customer_id == template)).mappings().all()
        assert len(subscriptions) == 1, "the template has one subscription"
        sub = dict(subscriptions[0])
        seat = dict(conn.execute(select(seat_t).where(seat_t.c.subscription_id == sub["id"])).mappings().one())
    del sub["id"], seat["id"]
    for at in range(0, len(customers), chunk):
        part = sorted(customers[at:at + chunk])
        with engine.begin() as conn:
            conn.execute(insert(customer_t), [{**base, "id": c} for c in part])
            conn.execute(insert(sub_t), [{**sub, "customer_id": c} for c in part])
            ids = conn.execute(select(sub_t.c.id).where(sub_t.c.customer_id.in_(part))
                               .order_by(sub_t.c.id)).scalars().all()
            conn.execute(insert(seat_t), [{**seat, "subscription_id": i} for i in ids])


# ``run_child`` (bench/import.py, bench/scale.py): a CLI step as users run it, timed, with the
# peak resident memory of its process tree.

def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants now (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    tree, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in tree:
                tree.append(child)
                frontier.append(child)
    return tree


def _memory_kib(pid: int) -> tuple[int, int]:
    """(resident KiB now, the peak resident KiB of its program: ``VmHWM``, reset at exec);
    (0, 0) once gone."""
    now = peak = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    now = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1])
    except OSError:
        pass
    return now, peak


def run_child(argv: list[str], env: dict[str, str]) -> tuple[float, int, int, str]:
    """(seconds, peak resident KiB of that child alone, peak resident KiB of the child and
    its own children together, its stdout). Sampled every 50 ms from /proc: each process's
    own high-water mark (``VmHWM``, so a peak between two samples is not missed) and the
    tree's resident total; the tree's peak is the larger of the highest total and the sum of
    the high-water marks. Not ``ru_maxrss``: on Linux a child's counts the memory of the
    forking parent it started as."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        tree_peak, hwm = 0, {}
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            total = 0
            for member in _tree(proc.pid):
                now, peak = _memory_kib(member)
                total += now
                hwm[member] = max(hwm.get(member, 0), peak)
            tree_peak = max(tree_peak, total)
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise SystemExit(f"{argv[:4]} failed ({proc.returncode}): {err.read().decode()[-2000:]}")
        own = hwm.get(proc.pid) or usage.ru_maxrss
        return seconds, own, max(tree_peak, sum(hwm.values()), own), out.read().decode()
