"""``BillingCallback``, the LiteLLM ``CustomLogger``, driven with LiteLLM's own objects (no
network): ``ModelResponse``s built locally, and ``litellm.completion`` /
``acompletion`` with ``mock_response``, recording through the client in-process and over
HTTP, on SQLite and PostgreSQL. Importing LiteLLM takes seconds: the module is ``slow``."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of LiteLLM's price list
litellm = pytest.importorskip("litellm")

from billing.client.litellm_callback import BillingCallback  # noqa: E402
from tests.support.quota import NOW  # noqa: E402

pytestmark = pytest.mark.slow


def model_response(response_id: str = "chatcmpl-abc"):
    return litellm.ModelResponse(
        id=response_id, model="gpt-4o-2024-08-06", choices=[{"message": {"role": "assistant", "content": "hi"}}],
        usage={"prompt_tokens": 1000, "completion_tokens": 300, "total_tokens": 1300,
               "prompt_tokens_details": {"cached_tokens": 400},
               "completion_tokens_details": {"reasoning_tokens": 100}})


def kwargs_for(customer: str | None, **metadata) -> dict:
    meta = {"customer": customer, **metadata} if customer else metadata
    return {"model": "gpt-4o", "litellm_params": {"metadata": meta}, "litellm_call_id": "call-1"}


def test_a_model_response_is_recorded_once_with_its_usage(any_env):
    callback = BillingCallback(any_env.client)
    end = NOW.replace(tzinfo=None)  # LiteLLM's naive local time (UTC here)
    for _ in range(2):  # LiteLLM running the callback again: the same event
        callback.log_success_event(kwargs_for("tok", feature="chat"), model_response(), end - timedelta(seconds=1),
                                   end)
    events = any_env.events("tok")
    assert [(e["id"], e["type"]) for e in events] == [("chatcmpl-abc", "llm.call")]
    assert events[0]["properties"] == {"model": "gpt-4o-2024-08-06", "feature": "chat", "input_tokens": 600,
                                       "cache_read_tokens": 400, "output_tokens": 200, "reasoning_tokens": 100}
    assert events[0]["cost_pico"] > 0  # priced by the cost book at the response's model
    assert (callback.recorded, callback.skipped, callback.rejected) == (2, 0, 0)


def test_no_customer_or_an_unknown_one_is_logged_never_raised(any_env, caplog):
    callback = BillingCallback(any_env.client, customer_key="tenant")
    end = NOW.replace(tzinfo=None)
    callback.log_success_event(kwargs_for(None), model_response("r1"), end, end)
    callback.log_success_event({**kwargs_for(None), "litellm_params": {"metadata": {"tenant": "nobody"}}},
                               model_response("r2"), end, end)
    assert (callback.skipped, callback.rejected, callback.recorded) == (1, 1, 0)
    assert "customer_not_found" in caplog.text


def _wait_for(predicate, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_litellm_completions_reach_the_ledger_through_the_callback(any_env, monkeypatch):
    any_env.clock.now = datetime.now(UTC) + timedelta(minutes=5)  # LiteLLM stamps with the real clock
    callback = BillingCallback(any_env.client)
    monkeypatch.setattr(litellm, "callbacks", [callback])
    response = litellm.completion(model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}],
                                  mock_response="hi", metadata={"customer": "tok", "task": "t-1"})
    _wait_for(lambda: callback.recorded == 1)  # LiteLLM runs sync callbacks on a thread

    async def call():
        answer = await litellm.acompletion(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                           mock_response="there", user="tok")
        for _ in range(200):  # LiteLLM runs async callbacks as tasks on this loop
            if callback.recorded == 2:
                break
            await asyncio.sleep(0.05)
        return answer

    second = asyncio.run(call())
    events = {e["id"]: e["properties"] for e in any_env.events("tok")}
    assert set(events) == {response.id, second.id}
    usage = response.usage
    assert events[response.id] == {"model": response.model, "task": "t-1", "input_tokens": usage.prompt_tokens,
                                   "output_tokens": usage.completion_tokens}
