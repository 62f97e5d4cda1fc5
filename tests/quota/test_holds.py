"""Two-phase quota use over the database: reserve / commit / release / expiry, idempotency,
task usage, and the concurrency promise (200 racing reservations, 100 units: exactly 100)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal as D

import pytest
from sqlalchemy import update

from billing.errors import BillingError, ErrorCode
from billing.ledger.accounts import Accounts
from billing.reservations.holds import Quota
from billing.store.models import Invoice
from tests.support.db import postgres_server_url
from tests.support.quota import NOW, T0, Clock, catalog, postgres_database

CAT = catalog()


def setup(engine, plan: str, customer: str = "acme", seats: int = 1):
    acc = Accounts(engine, CAT)
    acc.create_customer(customer, now=T0)
    acc.subscribe(customer, plan, at=T0, seats=seats)
    clock = Clock()
    return Quota(engine, CAT, clock=clock), clock


def test_reserve_commit_release(sqlite_engine):
    q, clock = setup(sqlite_engine, "blocky")
    r = q.reserve("acme", "requests", 40, request_id="req-1")
    assert r.granted and r.decision.reason == "included"
    assert q.check("acme", "requests", 61).outcome == "deny"  # 40 held of 100
    assert q.check("acme", "requests", 60).outcome == "allow"
    out = q.commit(r.id, {"id": "evt-1", "type": "request", "properties": {}})
    assert out["event"] == "accepted"
    assert q.commit(r.id, {"id": "evt-1", "type": "request", "properties": {}})["event"] == "duplicate"
    usage = q.usage("acme")
    assert usage["meters"]["requests"] == {"used": "1", "held": "0", "events": 1, "provider_cost": "0"}
    r2 = q.reserve("acme", "requests", 10)
    assert q.usage("acme")["charges"][0]["held"] == "10"
    assert q.release(r2.id) == {"reservation_id": r2.id, "status": "released"}
    assert q.release(r2.id)["status"] == "released"  # idempotent
    assert q.usage("acme")["charges"][0]["held"] == "0"
    with pytest.raises(BillingError) as err:
        q.commit(r2.id)
    assert err.value.code == ErrorCode.INVALID_TRANSITION
    with pytest.raises(BillingError) as err:
        q.release(r.id)
    assert err.value.code == ErrorCode.INVALID_TRANSITION
    with pytest.raises(BillingError) as err:
        q.release("rsv_nope")
    assert err.value.code == ErrorCode.RESERVATION_NOT_FOUND


def test_reserve_is_idempotent_on_request_id(sqlite_engine):
    q, _ = setup(sqlite_engine, "blocky")
    a = q.reserve("acme", "requests", 5, request_id="same")
    b = q.reserve("acme", "requests", 5, request_id="same")
    assert b.id == a.id and b.replayed
    assert q.usage("acme")["charges"][0]["held"] == "5"
    with pytest.raises(BillingError) as err:
        q.reserve("acme", "requests", 6, request_id="same")
    assert err.value.code == ErrorCode.CONFLICT


def test_denied_reservation_holds_nothing(sqlite_engine):
    q, _ = setup(sqlite_engine, "blocky")
    assert q.reserve("acme", "requests", 100).granted
    r = q.reserve("acme", "requests", 1)
    assert not r.granted and r.decision.reason == "quota_exhausted"
    assert r.decision.retry_after > 0


def test_expired_holds_free_themselves(sqlite_engine):
    q, clock = setup(sqlite_engine, "blocky")
    r = q.reserve("acme", "requests", 100, ttl=30)
    assert q.check("acme", "requests").outcome == "deny"
    clock.now = NOW + timedelta(seconds=31)
    assert q.check("acme", "requests").outcome == "allow"
    # a late commit of an expired hold still records the usage
    assert q.commit(r.id, {"type": "request", "properties": {}})["event"] == "accepted"
    assert q.usage("acme")["meters"]["requests"]["used"] == "1"
    clock.now = NOW + timedelta(days=2)
    q.reserve("acme", "requests", 1, ttl=1)
    clock.now = NOW + timedelta(days=4)
    assert q.purge_expired() == 1


def test_commit_fills_defaults_and_rejects_bad_events(sqlite_engine):
    q, _ = setup(sqlite_engine, "cursor-pro")
    r = q.reserve("acme", "requests", request_id="x")
    with pytest.raises(BillingError) as err:
        q.commit(r.id, {"customer": "other"})
    assert err.value.code == ErrorCode.VALIDATION
    with pytest.raises(BillingError) as err:
        q.commit(r.id, {"timestamp": "not a time"})
    assert err.value.code == ErrorCode.BAD_TIMESTAMP
    assert q.get(r.id).status == "held"  # a rejected event leaves the hold in place
    out = q.commit(r.id)
    assert out["event_id"] == r.id and out["event"] == "accepted"


def test_slow_tier_rate_window_counts_grants(sqlite_engine):
    q, clock = setup(sqlite_engine, "cursor-pro")  # 500 fast, then haiku at 20/min
    assert q.reserve("acme", "requests", 500, ttl=3600).decision.reason == "included"
    lanes = [q.reserve("acme", "requests") for _ in range(21)]
    assert all(r.decision.lane.model == "claude-haiku-4-5" for r in lanes[:20])
    assert not lanes[20].granted and lanes[20].decision.reason == "rate_limited"
    assert 0 < lanes[20].decision.retry_after <= 60
    clock.now = NOW + timedelta(seconds=60)
    assert q.reserve("acme", "requests").decision.outcome == "downgrade"


def test_agent_task_usage_limits_steps(sqlite_engine):
    q, _ = setup(sqlite_engine, "blocky")  # max 3 steps per task
    for i in range(3):
        r = q.reserve("acme", "steps", task="t1")
        assert r.granted, r.decision
        if i < 2:
            q.commit(r.id, {"properties": {"input_tokens": 10, "model": "claude-sonnet-4-5"}})
    # two committed + one held = 3 steps
    d = q.check("acme", "steps", task="t1")
    assert (d.outcome, d.reason) == ("deny", "task_limit")
    assert q.check("acme", "steps", task="t2").outcome == "allow"
    # events recorded directly also count (the ledger counts task usage in its transaction)
    events = [{"id": "direct-1", "customer": "acme", "type": "agent.step", "timestamp": NOW.isoformat(),
               "properties": {"task": "t3", "output_tokens": 999, "model": "claude-sonnet-4-5"}}]
    q.ledger.record(events)
    d = q.check("acme", "steps", task="t3", tokens=2)
    assert (d.outcome, d.reason) == ("deny", "task_limit") and "tokens 1001 > 1000" in d.message


def test_credits_and_dunning_from_the_database(sqlite_engine):
    q, _ = setup(sqlite_engine, "support-chatbot")
    r = q.reserve("acme", "messages", 1100)  # 100 included + $50 of overage: the cap
    assert r.granted
    assert q.check("acme", "messages").reason == "spend_cap_reached"
    Accounts(sqlite_engine, CAT).grant_credits("acme", D("1.00"), at=T0)
    assert q.check("acme", "messages").outcome == "allow"
    with sqlite_engine.begin() as conn:
        conn.execute(Invoice.__table__.insert().values(
            dedupe_key="x", customer_id="acme", plan_id="support-chatbot", plan_version=1, currency="USD",
            period_start=T0, period_end=T0, created_at=T0, status="finalized",
            payment_failed_at=NOW - timedelta(days=8)))
    assert q.check("acme", "messages").reason == "payment_overdue"
    with sqlite_engine.begin() as conn:
        conn.execute(update(Invoice.__table__).values(status="paid"))
    assert q.check("acme", "messages").outcome == "allow"


def test_unknown_customer_and_subscription(sqlite_engine):
    q, _ = setup(sqlite_engine, "blocky")
    with pytest.raises(BillingError) as err:
        q.check("nobody", "requests")
    assert err.value.code == ErrorCode.CUSTOMER_NOT_FOUND
    Accounts(sqlite_engine, CAT).create_customer("bare", now=T0)
    with pytest.raises(BillingError) as err:
        q.reserve("bare", "requests")
    assert err.value.code == ErrorCode.SUBSCRIPTION_NOT_FOUND
    with pytest.raises(BillingError) as err:
        q.reserve("acme", "requests", -1)
    assert err.value.code == ErrorCode.VALIDATION


def _race(engine, n: int = 200, limit_plan: str = "blocky") -> int:
    q, _ = setup(engine, limit_plan)
    barrier = threading.Barrier(20)

    def one(i: int) -> bool:
        if i < 20:
            barrier.wait()
        return q.reserve("acme", "requests", 1, request_id=f"r{i}").granted

    with ThreadPoolExecutor(max_workers=20) as pool:
        granted = sum(pool.map(one, range(n)))
    held = q.usage("acme")["charges"][0]["held"]
    assert held == str(granted)
    return granted


def test_concurrent_reservations_never_exceed_the_limit_sqlite(sqlite_engine):
    assert _race(sqlite_engine) == 100


@pytest.mark.slow
def test_concurrent_reservations_never_exceed_the_limit_postgres():
    postgres_server_url()  # skipped without PostgreSQL, failed when it is required
    with postgres_database() as engine:
        assert _race(engine) == 100


def test_two_phase_on_postgres():
    postgres_server_url()
    with postgres_database() as engine:
        q, clock = setup(engine, "cursor-pro")
        r = q.reserve("acme", "requests", 1, request_id="a", task="t")
        assert q.reserve("acme", "requests", 1, request_id="a", task="t").id == r.id
        assert q.commit(r.id, {"properties": {"input_tokens": 5, "model": "claude-sonnet-4-5"}})["event"] == "accepted"
        assert q.usage("acme")["meters"]["requests"]["used"] == "1"
        assert q.release(q.reserve("acme", "requests").id)["status"] == "released"


def _text_nobody_can_store(q) -> None:
    """NUL characters and lone surrogates in any text of a quota call are validation errors
    (PostgreSQL cannot store a NUL; a lone surrogate is not UTF-8), never a driver error."""
    bad = ["a\x00b", "\ud800"]
    calls = [lambda v: q.check(v, "requests"), lambda v: q.reserve(v, "requests"),
             lambda v: q.reserve("acme", "requests", model=v), lambda v: q.reserve("acme", "requests", task=v),
             lambda v: q.reserve("acme", "requests", request_id=v), lambda v: q.commit(v),
             lambda v: q.release(v)]
    for value in bad:
        for call in calls:
            with pytest.raises(BillingError) as err:
                call(value)
            assert err.value.code == ErrorCode.VALIDATION
    assert q.reserve("acme", "requests", request_id="fine").granted  # nothing was left broken


def test_unstorable_text_is_a_validation_error_sqlite(sqlite_engine):
    q, _clock = setup(sqlite_engine, "cursor-pro")
    _text_nobody_can_store(q)


@pytest.mark.slow
def test_unstorable_text_is_a_validation_error_postgres():
    postgres_server_url()
    with postgres_database() as engine:
        q, _clock = setup(engine, "cursor-pro")
        _text_nobody_can_store(q)


def _mixed_checks(engine):
    """A quota over ``engine`` with customers in many states, the checks to ask (each
    several times) and what each answers asked alone."""
    q, _clock = setup(engine, "cursor-pro")  # rate-limited slow lane
    acc = Accounts(engine, CAT)
    for cid, plan in (("blk", "blocky"), ("chat", "support-chatbot"), ("rl", "cursor-pro")):
        acc.create_customer(cid, now=T0)
        acc.subscribe(cid, plan, at=T0)
    for cid, slow in (("acme", 5), ("rl", 20)):  # five grants in the slow lane's window; all twenty
        q.reserve(cid, "requests", 500, ttl=3600)
        for _ in range(slow):
            q.reserve(cid, "requests")
    r = q.reserve("blk", "steps", task="t1")
    q.commit(r.id, {"properties": {"input_tokens": 10, "model": "claude-sonnet-4-5"}})
    q.reserve("blk", "steps", task="t1")
    q.reserve("blk", "steps", task="t1")  # 1 committed + 2 held: the task's 3 steps
    q.reserve("chat", "messages", 60)
    asks = [("acme", "requests", {}), ("acme", "requests", {"quantity": 30}), ("blk", "steps", {"task": "t1"}),
            ("blk", "steps", {"task": "t9"}), ("chat", "messages", {"quantity": 50}), ("nobody", "messages", {}),
            ("chat", "no-such-meter", {}), ("rl", "requests", {})] * 4

    def answer(ask):
        cid, key, kw = ask
        try:
            return q.check(cid, key, **kw).to_json()
        except BillingError as exc:
            return str(exc.code)

    reads, q.reads = q.reads, None  # each check alone
    alone = [answer(ask) for ask in asks]
    q.reads = reads
    assert {a["reason"] for a in alone if isinstance(a, dict)} >= {"included", "task_limit", "slow_tier",
                                                                   "rate_limited"}
    return q, asks, answer, alone


def _count_batches(q) -> list[int]:
    sizes: list[int] = []
    run = q.check_batch
    q.check_batch = lambda ops: (sizes.append(len(ops)), run(ops))[1]
    q.reads._run = q.check_batch
    return sizes


@pytest.mark.slow
def test_batched_postgres_checks_decide_as_one_check_alone():
    """On PostgreSQL concurrent checks share one read (``Quota.check_batch``): every answer
    equals the one a check alone gets, whatever mix of customers, plans, holds, rate windows,
    tasks and unknown customers the batch holds."""
    postgres_server_url()
    with postgres_database() as engine:
        q, asks, answer, alone = _mixed_checks(engine)
        sizes = _count_batches(q)
        start = threading.Barrier(len(asks))

        def together(ask):
            start.wait()
            return answer(ask)

        with ThreadPoolExecutor(max_workers=len(asks)) as pool:
            assert list(pool.map(together, asks)) == alone
        assert max(sizes) > 1  # checks did share reads


@pytest.mark.slow
def test_http_checks_on_postgres_are_batched_on_the_event_loop():
    """``billing.api.checks.AsyncChecks``: concurrent HTTP checks answer as checks alone,
    sharing batches; a bad question fails alone."""
    import asyncio

    import httpx

    from billing.api.app import create_app
    from billing.api.auth import create_key

    postgres_server_url()
    with postgres_database() as engine:
        q, asks, _answer, alone = _mixed_checks(engine)
        app = create_app(engine, CAT, clock=q.clock, context_ttl=0, key_cache_ttl=0)
        app.state.services.quota.close()
        app.state.services.quota = q
        app.state.checks.quota = q
        sizes = _count_batches(q)
        key = create_key(engine, "check")[1]

        def body(ask):
            cid, meter, kw = ask
            return {"customer": cid, "meter": meter, **{k: str(v) if k == "quantity" else v for k, v in kw.items()}}

        async def run():
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                calls = [client.post("/v1/quota/check", json=body(ask), headers={"Authorization": f"Bearer {key}"})
                         for ask in asks]
                calls.append(client.post("/v1/quota/check", json={"customer": "acme", "meter": "requests",
                                                                   "quantity": "-1"},
                                         headers={"Authorization": f"Bearer {key}"}))
                return await asyncio.gather(*calls)

        *answers, bad = asyncio.run(run())
        got = [r.json() if r.status_code == 200 else r.json()["error"]["code"] for r in answers]
        assert got == alone
        assert bad.status_code == 422
        assert max(sizes) > 1
