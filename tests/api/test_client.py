"""The Python client: the same behaviour in-process and over HTTP; guarded_call; usage blocks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.client import ApiError, HttpClient, LocalClient, QuotaDenied, extract_usage, guarded_call
from billing.errors import BillingError, ErrorCode
from billing.ledger.accounts import Accounts
from billing.reservations.holds import Quota
from tests.support.quota import T0, Clock, catalog

CAT = catalog()


@pytest.fixture(params=["local", "http"])
def client(request, sqlite_engine, tmp_path):
    acc = Accounts(sqlite_engine, CAT)
    acc.create_customer("acme", now=T0)
    acc.subscribe("acme", "cursor-pro", at=T0)  # 500 fast requests, then claude-haiku-4-5
    acc.create_customer("bot", now=T0)
    acc.subscribe("bot", "support-chatbot", at=T0)
    clock = Clock()
    if request.param == "local":
        return LocalClient(Quota(sqlite_engine, CAT, clock=clock))
    app = create_app(sqlite_engine, CAT, clock=clock, context_ttl=0)
    _, key = create_key(sqlite_engine, "admin")
    return HttpClient("http://testserver", key, client=TestClient(app, base_url="http://testserver"),
                      spool_dir=tmp_path / "spool", clock=clock)


def openai_response(prompt=1200, completion=300, cached=1000):
    return SimpleNamespace(choices=[], usage=SimpleNamespace(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
        prompt_tokens_details=SimpleNamespace(cached_tokens=cached)))


def anthropic_response():
    return {"content": [], "usage": {"input_tokens": 50, "output_tokens": 400, "cache_read_input_tokens": 2000,
                                     "cache_creation_input_tokens": 100}}


def test_extract_usage_styles():
    assert extract_usage(openai_response()) == {"input_tokens": 200, "output_tokens": 300, "cache_read_tokens": 1000}
    assert extract_usage(openai_response(cached=0)) == {"input_tokens": 1200, "output_tokens": 300}
    assert extract_usage(anthropic_response()) == {"input_tokens": 50, "output_tokens": 400,
                                                   "cache_read_tokens": 2000, "cache_write_tokens": 100}
    assert extract_usage({"usage": {"input_tokens": 90, "output_tokens": 5,
                                    "input_tokens_details": {"cached_tokens": 40}}}) == {
        "input_tokens": 50, "cache_read_tokens": 40, "output_tokens": 5}
    assert extract_usage({"prompt_tokens": 3, "completion_tokens": 4}) == {"input_tokens": 3, "output_tokens": 4}
    # OpenAI counts reasoning inside the output: reported apart, never twice
    chat = {"usage": {"prompt_tokens": 100, "completion_tokens": 900,
                      "completion_tokens_details": {"reasoning_tokens": 700}}}
    assert extract_usage(chat) == {"input_tokens": 100, "output_tokens": 200, "reasoning_tokens": 700}
    responses = {"usage": {"input_tokens": 60, "output_tokens": 50, "input_tokens_details": {"cached_tokens": 0},
                           "output_tokens_details": {"reasoning_tokens": 30}}}
    assert extract_usage(responses) == {"input_tokens": 60, "output_tokens": 20, "reasoning_tokens": 30}
    assert extract_usage(object()) == {}
    assert extract_usage({"usage": None}) == {}


def test_same_interface(client):
    d = client.check("acme", "requests")
    assert (d["outcome"], d["reason"], d["remaining"]) == ("allow", "included", {"requests": "500"})
    r = client.reserve("acme", charge="fast_requests", quantity=2, request_id="a")
    assert r["granted"]
    again = client.reserve("acme", charge="fast_requests", quantity=2, request_id="a")
    assert again["replayed"] and again["reservation_id"] == r["reservation_id"]
    with pytest.raises(BillingError) as err:
        client.reserve("acme", "requests", quantity=2, request_id="a")
    assert err.value.code == ErrorCode.CONFLICT
    assert client.usage("acme")["meters"]["requests"]["held"] == "2"
    assert client.release(r["reservation_id"])["status"] == "released"
    rec = client.record([{"id": "e1", "customer": "acme", "type": "request", "timestamp": "2026-10-02T00:00:00Z",
                          "properties": {}}])
    assert rec["accepted"] == 1 and rec["results"][0]["status"] == "accepted"
    with pytest.raises(BillingError) as err:
        client.commit("rsv_missing")
    assert err.value.code == ErrorCode.RESERVATION_NOT_FOUND
    with pytest.raises(BillingError) as err:
        client.check("nobody", "requests")
    assert err.value.code == ErrorCode.CUSTOMER_NOT_FOUND


def test_guarded_call_commits_actual_tokens(client):
    seen = []

    def llm(model):
        seen.append(model)
        return openai_response()

    out = guarded_call(client, "bot", "messages", llm, model="claude-sonnet-4-5",
                       properties={"feature": "support-chat"}, event_type="llm.call")
    assert seen == ["claude-sonnet-4-5"]
    assert out.usage == {"input_tokens": 200, "output_tokens": 300, "cache_read_tokens": 1000}
    assert out.commit["event"] == "accepted"
    usage = client.usage("bot")
    assert usage["meters"]["messages"]["used"] == "1" and usage["meters"]["messages"]["held"] == "0"
    assert usage["meters"]["messages"]["provider_cost"] != "0"


def test_guarded_call_releases_on_error(client):
    def boom(model):
        raise RuntimeError("provider down")

    with pytest.raises(RuntimeError):
        guarded_call(client, "acme", "requests", boom, quantity=500)
    assert client.usage("acme")["meters"]["requests"]["held"] == "0"


def test_guarded_call_uses_the_lane_model_and_raises_when_denied(client):
    client.reserve("acme", "requests", quantity=500, ttl=3600)
    out = guarded_call(client, "acme", "requests", lambda model: {"model": model, "usage": {
        "input_tokens": 10, "output_tokens": 2}}, model="claude-sonnet-4-5")
    assert out.model == "claude-haiku-4-5" and out.decision["outcome"] == "downgrade"
    for _ in range(19):
        client.reserve("acme", "requests")
    with pytest.raises(QuotaDenied) as denied:
        guarded_call(client, "acme", "requests", lambda model: pytest.fail("must not be called"))
    assert denied.value.reason == "rate_limited" and 0 < denied.value.retry_after <= 60


def test_http_errors_carry_status_and_code(sqlite_engine):
    app = create_app(sqlite_engine, CAT, context_ttl=0)
    bad = HttpClient("http://testserver", "bk_wrong", client=TestClient(app, base_url="http://testserver"))
    with pytest.raises(ApiError) as err:
        bad.check("acme", "requests")
    assert err.value.status == 401 and err.value.code == ErrorCode.UNAUTHENTICATED


def test_metering_says_what_the_plan_counts(client):
    m = client.metering("bot")
    assert m["plan"] == {"id": "support-chatbot", "version": 1} and m["task_property"] == "task"
    (meter,) = m["meters"]
    assert (meter["key"], meter["event_type"], meter["aggregation"], meter["filter"]) == (
        "messages", "llm.call", "count", {"feature": "support-chat"})
    assert m["charges"] == [{"key": "messages", "meter": "messages"}]
    assert client.metering("acme")["meters"][0]["event_type"] == "request"
    with pytest.raises(BillingError) as err:
        client.metering("nobody")
    assert err.value.code == ErrorCode.CUSTOMER_NOT_FOUND

