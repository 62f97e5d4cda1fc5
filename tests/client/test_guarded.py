"""guarded_call records all the usage of one call, under the plan's meters, with the model of
the response when not given; refuses BEFORE the LLM call when that usage could not be
costed or metered; releases every hold when the call fails or a reservation is denied."""

from __future__ import annotations

import asyncio
import threading

import pytest

from billing.client import LocalClient, QuotaDenied, UsageRefused, async_guarded_call, guarded_call
from billing.errors import ErrorCode
from tests.support.client import make_env
from tests.support.sdk_shapes import anthropic_message, obj, openai_chat

SONNET = "claude-sonnet-4-5-20250929"  # an alias the cost book knows


def test_usage_lands_on_the_event_type_the_token_meters_count(any_env):
    """The plan counts requests (type request) and sums tokens on llm.call: the call records a
    request event and an llm.call event with the tokens; cost and task usage count once."""
    calls = []

    def llm(model):
        calls.append(model)
        return obj(anthropic_message(model=SONNET))

    out = guarded_call(any_env.client, "split", "requests", llm, task="t1", properties={"feature": "chat"})
    assert calls == [None] and out.model == SONNET and out.recorded
    assert [e["type"] for e in out.events] == ["request", "llm.call"]
    used = {m: any_env.used("split", m) for m in ("requests", "input_tokens", "output_tokens", "searches")}
    assert used == {"requests": "1", "input_tokens": "50", "output_tokens": "250", "searches": "3"}
    stored = {e["type"]: e for e in any_env.events("split")}
    assert set(stored) == {"request", "llm.call"}
    assert stored["request"]["cost_pico"] == 0 and "input_tokens" not in stored["request"]["properties"]
    # per 1M tokens: 50 x 3 + 2000 x 0.30 + 40 x 3.75 (5-minute writes) + 60 x 6 (1-hour writes)
    # + (250 + 150) x 15, plus 3 web searches at $0.01; in picodollars
    per_token_pico = 50 * 3_000_000 + 2000 * 300_000 + 40 * 3_750_000 + 60 * 6_000_000 + 400 * 15_000_000
    assert stored["llm.call"]["cost_pico"] == per_token_pico + 3 * 10**10
    assert stored["llm.call"]["properties"]["task"] == "t1" and "task" not in stored["request"]["properties"]
    assert all(e["properties"]["model"] == SONNET and e["properties"]["feature"] == "chat" for e in stored.values())
    assert any_env.holds("split") == ["committed", "committed"]
    with any_env.engine.connect() as conn:
        from sqlalchemy import text

        steps, tokens = conn.execute(text("SELECT steps, tokens FROM agent_task_usage WHERE customer_id = 'split'")).one()
    assert (steps, tokens) == (1, 50 + 2000 + 100 + 250 + 150)


def test_model_is_taken_from_the_response(env):
    out = guarded_call(env.client, "bot", "messages", lambda model: openai_chat(model="gpt-4o-2024-08-06"),
                       properties={"feature": "support-chat"})
    assert out.recorded and out.model == "gpt-4o-2024-08-06"
    (event,) = env.events("bot")
    assert event["type"] == "llm.call" and event["properties"]["model"] == "gpt-4o-2024-08-06"
    assert event["cost_pico"] == (200 * 2.5 + 1000 * 1.25 + 300 * 10) * 10**6
    assert env.used("bot", "messages") == "1"


def test_refused_before_the_call_when_the_plan_would_not_count_it(env):
    def never(model):
        raise AssertionError("the LLM must not be called")

    with pytest.raises(UsageRefused) as refused:  # the messages meter counts feature=support-chat only
        guarded_call(env.client, "bot", "messages", never, model="claude-haiku-4-5", properties={"feature": "x"})
    assert refused.value.problems[0]["code"] == "unmetered_usage"
    assert "feature=support-chat" in str(refused.value) and refused.value.code == ErrorCode.UNKNOWN_EVENT_TYPE
    with pytest.raises(UsageRefused):  # cursor-pro counts request events, not outcomes
        guarded_call(env.client, "acme", "requests", never, event_type="outcome")
    assert set(env.holds("bot")) == {"released"} and set(env.holds("acme")) == {"released"}
    assert env.client.usage("bot")["meters"]["messages"]["held"] == "0"
    # opted in: the call is made and its usage recorded (not counted by the meter), with a warning
    out = guarded_call(env.client, "bot", "messages", lambda m: openai_chat(model=m), model="claude-haiku-4-5",
                       properties={"feature": "x"}, allow_unmetered=True)
    assert out.recorded and out.warnings[0]["code"] == "unmetered_usage"
    assert env.used("bot", "messages") == "0" and len(env.events("bot")) == 1


class WarningClient(LocalClient):
    """A service that warns on reservations (``warnings`` at the top or in the decision)."""

    def __init__(self, quota, where):
        super().__init__(quota)
        self.where = where

    def reserve(self, *args, **kwargs):
        answer = super().reserve(*args, **kwargs)
        warning = [{"code": "unpriced_model", "message": "no price for model 'new-model' in the cost book"}]
        if self.where == "top":
            answer["warnings"] = warning
        else:
            answer["decision"]["warnings"] = warning
        return answer


@pytest.mark.parametrize("where", ["top", "decision"])
def test_refused_before_the_call_when_the_service_warns_unpriced(sqlite_engine, tmp_path, where):
    base = make_env("local", sqlite_engine, tmp_path)
    client = WarningClient(base.client.quota, where)
    with pytest.raises(UsageRefused) as refused:
        guarded_call(client, "acme", "requests", lambda m: pytest.fail("must not be called"), model="new-model")
    assert refused.value.code == ErrorCode.UNKNOWN_MODEL and "new-model" in str(refused.value)
    assert base.holds("acme") == ["released"]
    out = guarded_call(client, "acme", "requests", lambda m: {"model": m, "usage": {}}, model="new-model",
                       allow_unpriced=True)
    assert out.warnings[0]["code"] == "unpriced_model" and out.commit["status"] == "committed"


def test_a_denied_secondary_reservation_releases_the_first(env):
    """Reserving on the token meter also counts a request (block after 3): the 4th call is
    denied before the LLM call, and its token hold released."""
    for _ in range(3):
        assert guarded_call(env.client, "split", "output_tokens", lambda m: anthropic_message(),
                            quantity=0).recorded
    with pytest.raises(QuotaDenied) as denied:
        guarded_call(env.client, "split", "output_tokens", lambda m: pytest.fail("must not be called"), quantity=0)
    assert denied.value.reason == "quota_exhausted"
    assert env.holds("split").count("released") == 1 and env.holds("split").count("committed") == 6
    assert env.used("split", "requests") == "3"


def test_a_failed_call_releases_every_hold(env):
    with pytest.raises(RuntimeError):
        guarded_call(env.client, "split", "requests", lambda m: (_ for _ in ()).throw(RuntimeError("down")))
    assert env.holds("split") == ["released", "released"]


def test_async_guarded_call_blocking_client_in_a_thread(env):
    async def llm(model):
        await asyncio.sleep(0)
        return anthropic_message(model=SONNET)

    out = asyncio.run(async_guarded_call(env.client, "split", "requests", llm))
    assert out.recorded and [e["type"] for e in out.events] == ["request", "llm.call"]
    assert env.used("split", "input_tokens") == "50"


@pytest.mark.slow
@pytest.mark.postgres
def test_concurrent_calls_never_pass_the_limit_and_record_each_call_once(tmp_path):
    """Two threads making guarded calls at once on one PostgreSQL (block after 3 requests)."""
    from tests.support.db import postgres_server_url
    from tests.support.quota import postgres_database

    postgres_server_url()
    with postgres_database() as engine:
        env = make_env("local", engine, tmp_path)
        outcomes: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(2)

        def worker():
            client = LocalClient(env.client.quota)
            start.wait()
            for _ in range(4):
                try:
                    guarded_call(client, "split", "requests", lambda m: anthropic_message(model=SONNET))
                    result = "ok"
                except QuotaDenied:
                    result = "denied"
                with lock:
                    outcomes.append(result)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count("ok") == 3 and outcomes.count("denied") == 5
        assert env.used("split", "requests") == "3" and env.used("split", "input_tokens") == "150"
        assert len(env.events("split")) == 6


def test_properties_json_has_no_type_for_are_sent_as_text(env):
    import uuid
    from decimal import Decimal

    trace = uuid.uuid4()
    out = guarded_call(env.client, "bot", "messages", lambda m: openai_chat(model=m), model="claude-haiku-4-5",
                       properties={"feature": "support-chat", "price": Decimal("1.50"), "trace": trace})
    assert out.recorded
    (event,) = env.events("bot")
    if env.kind == "http":  # over the wire as text; in-process the ledger keeps its own JSON form
        assert event["properties"]["price"] == "1.50" and event["properties"]["trace"] == str(trace)
