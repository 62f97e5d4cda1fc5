"""The HTTP clients' retries: one Idempotency-Key per logical write, the same on every try;
connection errors, timeouts, 5xx and 409 idempotency_key_in_use retried with bounded
backoff; other 4xx never. A fault-injecting transport in front of the real app shows a
call recorded exactly once through lost answers and 5xx."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.client import ApiError, AsyncHttpClient, HttpClient, RetryPolicy, async_guarded_call, guarded_call
from billing.errors import ErrorCode
from tests.support.client import CAT, Env, subscribe_all
from tests.support.faults import AsyncFaultTransport, FaultTransport
from tests.support.quota import Clock
from tests.support.sdk_shapes import anthropic_message, openai_chat

FAST = RetryPolicy(attempts=5, base_delay=0.001, max_delay=0.002)


class TickingClock(Clock):
    """A clock that moves on by a millisecond at every read (as a server's does between tries)."""

    def __call__(self):
        self.now += timedelta(milliseconds=1)
        return self.now


def http_env(engine, tmp_path, faults=None, retry=FAST, clock=None) -> tuple[Env, FaultTransport]:
    subscribe_all(engine)
    clock = clock or Clock()
    app = create_app(engine, CAT, clock=clock, context_ttl=0)
    _, key = create_key(engine, "admin")
    transport = FaultTransport(TestClient(app, base_url="http://testserver")._transport, faults)
    client = HttpClient("http://testserver", key, transport=transport, retry=retry, spool_dir=tmp_path / "spool",
                        clock=clock)
    return Env(client, engine, clock, "http", app, key), transport


def test_lost_answers_and_5xx_record_the_call_exactly_once(any_engine, tmp_path):
    env, transport = http_env(any_engine, tmp_path, {
        "/v1/quota/reserve": ["lost"], "/v1/quota/commit": ["lost", "503", "502", "lost"]}, clock=TickingClock())
    out = guarded_call(env.client, "bot", "messages", lambda m: openai_chat(model=m), model="claude-haiku-4-5",
                       properties={"feature": "support-chat"})
    assert out.recorded and out.commit["event"] in ("accepted", "duplicate")
    assert len(env.events("bot")) == 1 and env.used("bot", "messages") == "1"
    assert env.holds("bot") == ["committed"]  # the reservation whose answer was lost is the one committed
    reserve_keys, commit_keys = transport.keys("/v1/quota/reserve"), transport.keys("/v1/quota/commit")
    assert len(reserve_keys) == 2 and len(set(reserve_keys)) == 1 and reserve_keys[0]
    assert len(commit_keys) == 5 and len(set(commit_keys)) == 1 and commit_keys[0]
    assert reserve_keys[0] != commit_keys[0]
    assert env.client.spool.pending() == []


def test_each_write_gets_its_own_key_and_reads_none(sqlite_engine, tmp_path):
    env, transport = http_env(sqlite_engine, tmp_path)
    first = env.client.reserve("acme", "requests")
    env.client.reserve("acme", "requests")
    env.client.release(first["reservation_id"])
    env.client.check("acme", "requests")
    env.client.usage("acme")
    keys = [key for method, _path, key, _f in transport.log]
    assert len(set(keys[:3])) == 3 and all(keys[:3]) and keys[3:] == [None, None]
    with pytest.raises(ApiError):
        env.client.commit("rsv_unknown", idempotency_key="my-key")
    assert transport.log[-1][2] == "my-key"


def test_other_4xx_are_answers_never_retried(sqlite_engine, tmp_path):
    env, transport = http_env(sqlite_engine, tmp_path)
    with pytest.raises(ApiError) as err:
        env.client.commit("rsv_unknown")
    assert err.value.status == 404 and err.value.code == ErrorCode.RESERVATION_NOT_FOUND
    with pytest.raises(ApiError) as err:
        env.client.check("nobody", "requests")
    assert err.value.code == ErrorCode.CUSTOMER_NOT_FOUND
    reservation = env.client.reserve("acme", "requests", request_id="r1")
    with pytest.raises(ApiError) as err:  # the same request id for another request: 409 conflict
        env.client.reserve("acme", "requests", quantity=2, request_id="r1")
    assert err.value.status == 409 and err.value.code == ErrorCode.CONFLICT
    assert [p for _m, p, _k, _f in transport.log] == ["/v1/quota/commit", "/v1/quota/check", "/v1/quota/reserve",
                                                     "/v1/quota/reserve"]
    assert reservation["granted"]


def test_an_error_answer_carries_its_type_param_and_request_id(sqlite_engine, tmp_path):
    env, _transport = http_env(sqlite_engine, tmp_path)
    with pytest.raises(ApiError) as err:
        env.client.check("acme", "requests", quantity=-1)
    assert (err.value.status, err.value.code, err.value.type, err.value.param) == (
        422, ErrorCode.VALIDATION, "invalid_request_error", "quantity")
    assert err.value.request_id and err.value.request_id.startswith("req_")


def test_a_server_before_the_stripe_shape_is_read_too():
    import httpx

    from billing.client.http import answer

    legacy = httpx.Response(404, json={"code": "customer_not_found", "message": "no customer 'x'", "details": {"a": 1}},
                            headers={"x-request-id": "req_old"})
    with pytest.raises(ApiError) as err:
        answer(legacy)
    assert (err.value.code, err.value.message, err.value.details, err.value.request_id, err.value.type) == (
        ErrorCode.CUSTOMER_NOT_FOUND, "no customer 'x'", {"a": 1}, "req_old", None)


def test_key_in_use_is_waited_for(sqlite_engine, tmp_path):
    env, transport = http_env(sqlite_engine, tmp_path, {"/v1/quota/reserve": ["in_use", "in_use"]})
    assert env.client.reserve("acme", "requests")["granted"]
    keys = transport.keys("/v1/quota/reserve")
    assert len(keys) == 3 and len(set(keys)) == 1


def test_attempts_and_total_time_are_bounded(sqlite_engine, tmp_path):
    env, transport = http_env(sqlite_engine, tmp_path, {"/v1/quota/check": ["503"] * 50},
                              retry=RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.001))
    with pytest.raises(ApiError) as err:
        env.client.check("acme", "requests")
    assert err.value.status == 503 and len(transport.log) == 3
    transport.log.clear()
    env.client.retry = RetryPolicy(attempts=1000, total_seconds=0.3, base_delay=0.05, max_delay=0.05)
    began = time.monotonic()
    with pytest.raises(ApiError):
        env.client.check("acme", "requests")
    assert time.monotonic() - began < 0.6 and 4 <= len(transport.log) <= 12
    transport.faults["/v1/quota/check"] = ["connect"] * 50
    transport.log.clear()
    env.client.retry = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.001)
    with pytest.raises(httpx.ConnectError):
        env.client.check("acme", "requests")
    assert len(transport.log) == 4


def test_backoff_grows_with_jitter_and_honours_retry_after():
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0, rng=random.Random(7))
    for attempt, cap in enumerate((0.1, 0.2, 0.4, 0.8, 1.0, 1.0)):
        delays = {policy.delay(attempt) for _ in range(50)}
        assert all(cap / 2 <= d <= cap for d in delays) and len(delays) > 40  # jittered, never above the cap
    assert policy.delay(0, retry_after=0.7) == 0.7 and policy.delay(0, retry_after=30) == 1.0
    busy = ApiError("busy", code="internal_error", status=503)
    assert policy.next_delay(0, 0.0, busy) is not None
    assert policy.next_delay(4, 0.0, busy) is None  # attempts used up
    assert policy.next_delay(0, 29.99, busy) is None  # out of time
    assert policy.next_delay(0, 0.0, ApiError("no", code="event_conflict", status=409)) is None
    assert policy.next_delay(0, 0.0, ApiError("wait", code="idempotency_key_in_use", status=409)) is not None
    assert policy.next_delay(0, 0.0, httpx.UnsupportedProtocol("ftp://")) is None
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_async_client_retries_and_records_once(sqlite_engine, tmp_path):
    subscribe_all(sqlite_engine)
    clock = Clock()
    app = create_app(sqlite_engine, CAT, clock=clock, context_ttl=0)
    _, key = create_key(sqlite_engine, "admin")
    transport = AsyncFaultTransport(httpx.ASGITransport(app=app),
                                    {"/v1/quota/commit": ["lost", "connect", "503", "lost"],
                                     "/v1/quota/reserve": ["lost"]})
    env = Env(None, sqlite_engine, clock, "http")

    async def main():
        async with AsyncHttpClient("http://testserver", key, transport=transport, retry=FAST,
                                   spool_dir=tmp_path / "spool", clock=clock) as client:
            env.client = client

            async def llm(model):
                return anthropic_message(model="claude-sonnet-4-5")

            out = await async_guarded_call(client, "split", "requests", llm)
            usage = await client.usage("split")
            return out, usage

    out, usage = asyncio.run(main())
    assert out.recorded and [e["type"] for e in out.events] == ["request", "llm.call"]
    assert usage["meters"]["requests"]["used"] == "1" and usage["meters"]["input_tokens"]["used"] == "50"
    assert len(env.events("split")) == 2 and env.holds("split") == ["committed", "committed"]
    commit_keys = transport.keys("/v1/quota/commit")
    assert len(commit_keys) == 6 and len(set(commit_keys)) == 2  # two commits, each retried with its own key
