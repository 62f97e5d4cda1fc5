"""The global lock order on PostgreSQL (events, then counters, then agent task usage) holds
for every writer, not only for ``Ledger.record``: a quota commit and an ingestion chunk that
touch the same counter and the same task never wait for each other in a cycle.

The interleaving is forced, not hoped for: a third session holds the commit's quota hold
row, so the commit stops in the middle of its one statement (after whatever it locks
before the hold), then an ingestion chunk of the same customer and task runs into it."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from billing.reservations.holds import Quota
from billing.ledger.ingest import Ledger
from billing.reservations.writer import QuotaWriter
from billing.store.types import to_us
from tests.support.ledger import CATALOG, _event, _setup, assert_derived_equal_recount, task_rows

NOW = datetime(2026, 10, 20, tzinfo=UTC)


def _lock_waiters(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'").scalar_one()


def _wait_for_waiters(engine, n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while _lock_waiters(engine) < n:
        assert time.monotonic() < deadline, f"fewer than {n} sessions waiting for a lock"
        time.sleep(0.05)


def test_a_quota_commit_and_an_ingestion_chunk_take_locks_in_one_order(engine, monkeypatch):  # noqa: F811
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer: no row locks to order")
    _setup(engine)
    ledger = Ledger(engine, CATALOG, clock=lambda: NOW, alerts=False)
    quota = Quota(engine, CATALOG, clock=lambda: NOW, alerts=False)
    try:
        ledger.record([_event("acme", "warm", 1, task="t")])  # the counter and task rows exist
        hold = quota.reserve("acme", "llm_calls", task="t")
        assert hold.granted

        aborted: list[BaseException] = []  # transactions the database aborted (deadlock victims)
        real_retryable = ledger.retry.retryable

        def ledger_retryable(exc, attempt):
            aborted.append(exc)
            return real_retryable(exc, attempt)

        def quota_retryable(exc):
            aborted.append(exc)
            return getattr(getattr(exc, "diag", None), "sqlstate", None) in ("40P01", "40001")

        monkeypatch.setattr(ledger.retry, "retryable", ledger_retryable)
        monkeypatch.setattr(QuotaWriter, "_retryable", staticmethod(quota_retryable))

        blocker = engine.raw_connection()
        results: dict[str, object] = {}
        try:
            cur = blocker.cursor()
            # the task usage row: the commit (its hold locked first, then events, counters, the
            # hold's settlement) waits here last; the ingestion chunk waits for the counters
            cur.execute("SELECT 1 FROM agent_task_usage WHERE customer_id = 'acme' AND task_id = 't' FOR UPDATE")

            def commit() -> None:
                results["commit"] = quota.commit(hold.id, _event("acme", "q1", 2, task="t"))

            def ingest() -> None:
                results["ingest"] = ledger.record([_event("acme", "i1", 3, task="t")]).to_json()

            committer = threading.Thread(target=commit)
            committer.start()
            _wait_for_waiters(engine, 1)  # the commit waits for the task usage row
            ingester = threading.Thread(target=ingest)
            ingester.start()
            _wait_for_waiters(engine, 2)  # the chunk waits for a row the commit holds
            blocker.rollback()
        finally:
            blocker.close()
        committer.join(60)
        ingester.join(60)
        assert results["commit"]["event"] == "accepted" and results["ingest"]["accepted"] == 1, results
        assert not aborted, f"a deadlock: {aborted[0]}"
        assert task_rows(engine)[("acme", "t")][0] == 3
        assert_derived_equal_recount(engine)
    finally:
        quota.close()
        ledger.close()


@pytest.fixture
def icu_engine():
    """A PostgreSQL database whose default collation is ICU en-US (as many production
    servers' en_US.UTF-8): ``ORDER BY`` on text there is not the code point order Python
    sorts in (``'a1' < 'B1'``)."""
    import uuid

    from sqlalchemy.engine import make_url

    from billing.store.db import make_engine, upgrade
    from tests.support.db import _admin_connection, postgres_server_url

    server = postgres_server_url()
    name = f"billing_t_icu_{uuid.uuid4().hex[:12]}"
    with _admin_connection(server) as admin:
        admin.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
                      "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'")
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        upgrade(url)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 'a1' < 'B1'").scalar_one()  # not the code point order
        yield engine
    finally:
        engine.dispose()
        with _admin_connection(server) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_every_insert_path_takes_event_rows_in_code_point_order(icu_engine):
    """A chunk that meets an existing event goes through the staging table (``INSERT ...
    SELECT ... ORDER BY``), another writer's small chunk inserts in Python's order: the two
    must be one order, also where the database's collation sorts text otherwise. Forced:
    a third session holds key ``C1`` uncommitted, so the small chunk [B1, C1, a1] stops
    holding B1; the staged chunk [A0 (stored), a1, B1, ...] then takes a1 and waits for B1;
    the small chunk goes on to a1: a cycle, unless both go B1 before a1."""
    engine = icu_engine
    _setup(engine)
    first, second = (Ledger(engine, CATALOG, clock=lambda: NOW, alerts=False) for _ in range(2))
    try:
        first.record([_event("acme", "A0", 0)])  # stored: the COPY of the big chunk fails on it
        small = [_event("acme", k, 1) for k in ("B1", "C1", "a1")]
        big = [_event("acme", k, 1) for k in ("A0", "a1", "B1")] + [_event("acme", f"f{i:03}", 2) for i in range(600)]
        aborted: list[BaseException] = []
        for ledger in (first, second):
            real = ledger.retry.retryable

            def retryable(exc, attempt, real=real):
                aborted.append(exc)
                return real(exc, attempt)

            ledger.retry.retryable = retryable
        blocker = engine.raw_connection()
        results: dict[str, object] = {}
        try:
            blocker.cursor().execute(  # (holding the key, as a writer does: billing.store.partitions)
                f"INSERT INTO usage_event_key (customer_id, event_id, ts) VALUES ('acme', 'C1', {to_us(NOW)})")
            threads = [threading.Thread(target=lambda: results.__setitem__("small", first.record(small).to_json())),
                       threading.Thread(target=lambda: results.__setitem__("big", second.record(big).to_json()))]
            threads[0].start()
            _wait_for_waiters(engine, 1)  # the small chunk waits for C1
            threads[1].start()
            _wait_for_waiters(engine, 2)  # the big chunk waits for a row the small one holds
            blocker.rollback()
        finally:
            blocker.close()
        for t in threads:
            t.join(60)
        assert results["small"]["accepted"] + results["big"]["accepted"] == 3 + 600, results
        assert not aborted, f"a deadlock: {aborted[0]}"
    finally:
        first.close()
        second.close()


def test_a_quota_commit_counts_under_the_subscriptions_a_concurrent_change_made(engine, monkeypatch):  # noqa: F811
    """A plan change (with its recount of the customer's counters) that commits between the
    moment a quota commit read the customer's subscriptions and its insert: the commit's
    event must count under the new plan, as ``Ledger.record`` does (it reads subscriptions
    after its insert, which waits for a recount in flight). Forced: the change runs while the
    commit's transaction is between its reads and its writes."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's writer holds the database from BEGIN: nothing commits in between")
    from billing.ledger.accounts import Accounts

    _setup(engine, customers=("acme",))
    quota = Quota(engine, CATALOG, clock=lambda: NOW, alerts=False)
    try:
        hold = quota.reserve("acme", "llm_calls")
        assert hold.granted
        real_settle = QuotaWriter._settle_plan
        changed: dict[str, object] = {}

        def change_meanwhile(self, *args):
            if "thread" not in changed:
                def change() -> None:
                    try:
                        Accounts(engine, CATALOG).change_plan("acme", "support-chatbot", at=datetime(2026, 10, 15,
                                                                                                        tzinfo=UTC))
                        changed["done"] = True
                    except BaseException as exc:  # noqa: BLE001
                        changed["error"] = exc

                changed["thread"] = threading.Thread(target=change)
                changed["thread"].start()
                deadline = time.monotonic() + 20
                while "done" not in changed and "error" not in changed and _lock_waiters(engine) < 1:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)  # the change committed, or it waits for this transaction
            return real_settle(self, *args)

        monkeypatch.setattr(QuotaWriter, "_settle_plan", change_meanwhile)
        event = {"id": "q1", "type": "llm.call",
                 "properties": {"model": "claude-sonnet-4-5", "input_tokens": 10, "feature": "support-chat"}}
        assert quota.commit(hold.id, event)["event"] == "accepted"
        changed["thread"].join(60)
        assert "error" not in changed, changed.get("error")
        assert_derived_equal_recount(engine)
    finally:
        quota.close()


@pytest.mark.postgres
def test_the_quota_commit_statement_inserts_in_code_point_order(icu_engine):
    """The quota commit's one statement orders its events (and counters and tasks) by code
    point too: B1 is inserted before a1 (the ids the database hands out tell the order)."""
    from billing.ledger.prepare import Prepared
    from billing.reservations.events import write_pg
    from billing.reservations.types import Hold
    from billing.store.partitions import create_month, month_of

    rows = [Prepared("acme", k, "llm.call", 1, "{}", None, 0, {}) for k in ("a1", "B1", "b0", "A2")]
    raw = icu_engine.raw_connection()
    try:
        cur = raw.cursor()
        create_month(lambda sql, params, _rows: cur.execute(sql, params).fetchall() if _rows else cur.execute(sql),
                     month_of(1))  # (the ledger creates its events' months: this test writes directly)
        write_pg(lambda sql, params=(): cur.execute(sql.replace("?", "%s"), params),
                 [(None, p, Hold("h", "acme", "held", "llm.call", None, None, None, 10**15, None, "llm_calls", 0))
                  for p in rows], [], [], 0, ("feature",))
        raw.commit()
        cur.execute("SELECT event_id FROM usage_event ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == sorted(p.event_id for p in rows) == ["A2", "B1", "a1", "b0"]
    finally:
        raw.close()
