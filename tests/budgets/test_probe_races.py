"""Budgets created at the same moment by two requests (two servers, or a client retrying
after a lost response): on PostgreSQL both saw the name free and the second INSERT met the
unique key, an IntegrityError the API answered 500; and both could pass the per-customer
cap of MAX_BUDGETS. The second is now 409 ``conflict`` (name) or 422 (cap), never a 500,
and the cap holds."""

from __future__ import annotations

import threading

import pytest

from billing.budgets import service as budget_service
from billing.budgets.service import Budgets
from billing.errors import BillingError
from billing.ledger.accounts import Accounts
from tests.support.budgets import budget_catalog
from tests.support.db import postgres_server_url
from tests.support.quota import T0, postgres_database

CAT = budget_catalog()


@pytest.fixture
def postgres_engine():
    """PostgreSQL only: SQLite's one writer at a time cannot let two creates interleave."""
    postgres_server_url()
    with postgres_database() as engine:
        yield engine


def _customer(engine, cid="acme"):
    acc = Accounts(engine, CAT)
    acc.create_customer(cid, now=T0)
    acc.subscribe(cid, "budgeted", at=T0)


def _race(engine, bodies: list[dict], monkeypatch) -> list[object]:
    """``Budgets.create`` of each body in its own thread, held before its INSERT until all are."""
    barrier = threading.Barrier(len(bodies))
    real_insert = budget_service.repo.insert_budget

    def insert_after_all_checked(*args, **kwargs):
        try:  # unserialized, every create reaches this having read the table (name free, under the
            barrier.wait(timeout=3)  # cap) before any inserts; serialized, the first waits out the
        except threading.BrokenBarrierError:  # timeout while holding its lock, then all go on in turn
            pass
        return real_insert(*args, **kwargs)

    monkeypatch.setattr(budget_service.repo, "insert_budget", insert_after_all_checked)
    out: list[object] = [None] * len(bodies)

    def run(i: int) -> None:
        try:
            out[i] = Budgets(engine, CAT).create("acme", bodies[i])[0].name
        except BillingError as exc:
            out[i] = exc.code
        except Exception as exc:  # noqa: BLE001 - what the API would answer 500
            out[i] = type(exc).__name__

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_two_creates_of_one_name_at_once_are_one_budget_and_one_conflict(postgres_engine, monkeypatch):
    _customer(postgres_engine)
    body = {"name": "daily-cost", "measure": "cost", "amount": "5", "window": "daily"}
    out = _race(postgres_engine, [body, body], monkeypatch)
    assert sorted(out) == ["conflict", "daily-cost"]
    assert [b.name for b in Budgets(postgres_engine, CAT).list("acme")] == ["daily-cost"]


def test_creates_racing_for_the_last_places_never_pass_the_cap(postgres_engine, monkeypatch):
    _customer(postgres_engine)
    monkeypatch.setattr(budget_service, "MAX_BUDGETS", 3)
    svc = Budgets(postgres_engine, CAT)
    svc.create("acme", {"name": "b0", "measure": "cost", "amount": "5"})
    out = _race(postgres_engine, [{"name": f"b{i}", "measure": "cost", "amount": "5"} for i in (1, 2, 3)],
                monkeypatch)
    assert len(svc.list("acme")) <= 3
    assert sorted(map(str, out)).count("validation_error") >= 1 and "IntegrityError" not in out
