"""Request ids, Prometheus metrics and JSON logs (issue 16, item 4): every response carries
`X-Request-Id` (the fast path, errors and refusals too), `GET /metrics` counts requests per
route template with a latency histogram, events by result, quota decisions by outcome, and
the outbox backlog; the JSON log line of a request carries its id."""

from __future__ import annotations

import json
import logging
import logging.config
import re

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.api.telemetry import JsonFormatter, log_config, request_id
from billing.ledger.accounts import Accounts
from tests.support.quota import T0, Clock, catalog

CAT = catalog()


@pytest.fixture
def api(any_engine):
    Accounts(any_engine, CAT).create_customer("acme", now=T0)
    Accounts(any_engine, CAT).subscribe("acme", "agent-platform", at=T0)
    key = create_key(any_engine, "admin")[1]
    with TestClient(create_app(any_engine, CAT, clock=Clock(), max_request_bytes=4096),
                    base_url="http://testserver") as http:
        http.headers["Authorization"] = f"Bearer {key}"
        yield http


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{{{want}}} in\n{text}")


def test_every_response_carries_a_request_id(api):
    answers = [api.get("/healthz"),  # the fast path
               api.post("/v1/quota/check", json={"customer": "acme", "charge": "sandbox"}),  # the fast path
               api.get("/v1/invoices/999999"),  # an error
               api.get("/no/such/route"),  # unmatched
               api.post("/v1/events", content=b"x" * 10_000, headers={"Content-Type": "application/json"}),  # 413
               api.post("/v1/events", json={"events": "nope"})]  # 422
    assert [a.status_code for a in answers][:2] == [200, 200] and answers[4].status_code == 413
    ids = [a.headers["x-request-id"] for a in answers]
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", i) for i in ids) and len(set(ids)) == len(ids)
    assert api.get("/healthz", headers={"X-Request-Id": "trace-42"}).headers["x-request-id"] == "trace-42"
    odd = api.get("/healthz", headers={"X-Request-Id": "x" * 500}).headers["x-request-id"]
    assert odd.startswith("req_")


def test_request_id_keeps_only_a_sane_caller_id():
    assert request_id([(b"x-request-id", b"abc-123")]) == "abc-123"
    for bad in (b"", b"a b", b"\xff", b"x" * 129):
        assert request_id([(b"x-request-id", bad)]).startswith("req_")


def test_metrics_count_routes_events_decisions_and_the_outbox(api):
    event = {"id": "e1", "customer": "acme", "type": "sandbox.session", "timestamp": "2026-10-05T10:00:00Z",
             "properties": {"minutes": 5}}
    assert api.post("/v1/events", json={"events": [event, event, {**event, "id": "bad", "timestamp": "x"}]}
                    ).status_code == 200
    for _ in range(3):
        assert api.post("/v1/quota/check", json={"customer": "acme", "charge": "sandbox"}).json()["outcome"] == "allow"
    api.get("/v1/invoices/999999")
    api.get("/v1/invoices/888888")
    page = api.get("/metrics")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = page.text
    assert _metric(text, "billing_events_total", status="accepted") == 1
    assert _metric(text, "billing_events_total", status="duplicate") == 1
    assert _metric(text, "billing_events_total", status="rejected") == 1
    assert _metric(text, "billing_quota_decisions_total", outcome="allow") == 3
    # the quota context cache: the first check loaded acme's context, the next two (same
    # instant, within context_ttl) found it
    assert _metric(text, "billing_quota_context_cache_total", result="miss") >= 1
    assert _metric(text, "billing_quota_context_cache_total", result="hit") >= 2
    assert _metric(text, "billing_quota_context_cache_size") >= 1
    assert _metric(text, "billing_http_requests_total", method="POST", route="/v1/quota/check", status="200") == 3
    # a route template, never the raw path: two invoice ids, one series
    invoice_route = next(m.group(1) for m in re.finditer(r'route="(/v1/invoices/\{[a-z_]+\})"', text))
    assert _metric(text, "billing_http_requests_total", method="GET", route=invoice_route, status="404") == 2
    assert _metric(text, "billing_http_request_duration_seconds_count", method="POST", route="/v1/quota/check") == 3
    assert _metric(text, "billing_http_request_duration_seconds_bucket", method="POST", route="/v1/quota/check",
                   le="+Inf") == 3
    # the fixture's subscription.created webhook waits for the worker's fan-out
    from billing.alerts.outbox import Outbox

    pending = Outbox(api.app.state.services.engine).rows("pending")
    assert [r["type"] for r in pending] == ["subscription.created"]
    assert _metric(text, "billing_outbox_backlog") == len(pending)


def test_the_json_log_line_of_a_request_carries_its_id(api, caplog):
    with caplog.at_level(logging.INFO, logger="billing.access"):
        rid = api.get("/healthz", headers={"X-Request-Id": "trace-7"}).headers["x-request-id"]
    (record,) = [r for r in caplog.records if getattr(r, "request_id", None) == rid]
    doc = json.loads(JsonFormatter().format(record))
    assert doc["request_id"] == "trace-7" and doc["status"] == 200 and doc["route"] == "/healthz"
    assert doc["level"] == "INFO" and doc["duration_ms"] >= 0
    config = log_config("json", "info")
    assert config["formatters"]["default"]["()"] == "billing.api.telemetry.JsonFormatter"
    logging.config.dictConfig(config)  # a config uvicorn accepts
    logging.config.dictConfig(log_config("text", "warning"))
