"""OTLP/HTTP JSON traces on ``POST /v1/otlp/v1/traces``: the payloads are the OpenTelemetry
SDK's own (``encode_spans`` + ``MessageToJson``, ``tests.support.formats``); the pure mapping
(``billing.api.formats.otlp``) and the HTTP door on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from billing.api.formats import Refused
from billing.api.formats.otlp import OtlpAttributes, to_events
from billing.errors import ErrorCode
from tests.support.formats import formats_api, hex_ids, sdk_otlp_json
from tests.support.quota import NOW

TRACES = "/v1/otlp/v1/traces"


def chat(customer: str | None = "acme", **attributes) -> dict:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
             "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 1000,
             "gen_ai.usage.output_tokens": 300, "gen_ai.usage.cache_read.input_tokens": 400,
             "gen_ai.usage.reasoning.output_tokens": 100, "billing.feature": "support-chat"}
    if customer is not None:
        attrs["enduser.id"] = customer
    attrs.update(attributes)
    return {"name": "chat gpt-4o", "attributes": {k: v for k, v in attrs.items() if v is not None},
            "start": NOW - timedelta(seconds=2), "end": NOW}


def test_a_genai_span_is_one_disjointly_counted_llm_call():
    body = sdk_otlp_json([chat(), {"name": "db query", "attributes": {"db.system": "postgresql"},
                                   "start": NOW, "end": NOW}])
    mapped = to_events(body)
    assert mapped.skipped == 1 and len(mapped.items) == 1
    event = mapped.items[0]
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert event["id"] == mapped.spans[0] and len(event["id"]) == 32 + 1 + 16
    assert event["customer"] == "acme" and event["type"] == "llm.call"
    assert event["timestamp"] == NOW.isoformat().replace("+00:00", "Z")
    # the conventions count cache reads inside input and reasoning inside output
    assert event["properties"] == {"model": "gpt-4o-2024-08-06", "operation": "chat", "feature": "support-chat",
                                   "input_tokens": 600, "cache_read_tokens": 400, "output_tokens": 200,
                                   "reasoning_tokens": 100}
    assert span["attributes"][3]["value"] == {"intValue": "1000"}  # the SDK's JSON: int64 as a string
    assert to_events(hex_ids(body)).items == mapped.items  # hex ids (OTLP JSON) name the same event


def test_configured_attributes_and_resource_fallback():
    body = sdk_otlp_json([chat(customer=None, **{"app.task": "t-9"})], resource={"tenant.id": "globex"})
    event = to_events(body, OtlpAttributes(customer="tenant.id", feature="billing.feature", task="app.task")).items[0]
    assert event["customer"] == "globex" and event["properties"]["task"] == "t-9"
    assert to_events(sdk_otlp_json([chat(**{"gen_ai.response.model": None})])).items[0]["properties"]["model"] \
        == "gpt-4o"


@pytest.mark.parametrize("attributes, code, field", [
    ({"enduser.id": None}, ErrorCode.EVENT_INVALID, "enduser.id"),
    ({"gen_ai.usage.input_tokens": -5}, ErrorCode.NON_NUMERIC_QUANTITY, "gen_ai.usage.input_tokens"),
    ({"gen_ai.usage.output_tokens": 2.5}, ErrorCode.NON_NUMERIC_QUANTITY, "gen_ai.usage.output_tokens"),
    ({"gen_ai.usage.input_tokens": 100}, ErrorCode.EVENT_INVALID, "gen_ai.usage.input_tokens"),  # < cached
    ({"gen_ai.usage.reasoning.output_tokens": 900}, ErrorCode.EVENT_INVALID, "gen_ai.usage.output_tokens"),
])
def test_a_bad_genai_span_is_refused_naming_the_attribute(attributes, code, field):
    items = to_events(sdk_otlp_json([chat(customer="acme", **attributes)])).items
    assert isinstance(items[0], Refused) and (items[0].code, items[0].field) == (code, field)
    assert field in items[0].message


def test_agent_wrappers_are_skipped_and_bad_shapes_are_named():
    agent = chat(**{"gen_ai.operation.name": "invoke_agent"})
    assert to_events(sdk_otlp_json([agent])).skipped == 1
    with pytest.raises(ValueError, match=r"resourceSpans\[0\].scopeSpans must be a JSON array"):
        to_events({"resourceSpans": [{"scopeSpans": {}}]})
    span = {"traceId": "00" * 16, "spanId": "ab" * 8, "attributes": [
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}}]}
    refused = to_events({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).items[0]
    assert isinstance(refused, Refused) and refused.field == "traceId"
    span.update(traceId="ab" * 16, endTimeUnixNano=str(10**30), attributes=[
        {"key": "enduser.id", "value": {"stringValue": "acme"}}, *span["attributes"]])
    refused = to_events({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).items[0]
    assert isinstance(refused, Refused) and (refused.code, refused.field) == (ErrorCode.BAD_TIMESTAMP,
                                                                              "endTimeUnixNano")


@pytest.fixture
def api(any_engine):
    yield from formats_api(any_engine)


def _stored(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT customer_id, type, model FROM usage_event ORDER BY customer_id"))]


def test_http_records_genai_spans_idempotently_and_reports_rejections(api):
    from google.protobuf.json_format import ParseDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    body = sdk_otlp_json([chat("acme"), chat("globex"), chat(None), chat("nobody"),
                          {"name": "http GET", "attributes": {"http.method": "GET"}, "start": NOW, "end": NOW}])
    r = api(TRACES, body)
    assert r.status_code == 200, r.text
    out = r.json()
    report = out["billing"]
    assert (report["accepted"], report["rejected"], report["skipped"]) == (2, 2, 1)
    assert [x["status"] for x in report["results"]] == ["accepted", "accepted", "rejected", "rejected"]
    assert report["results"][2]["code"] == "event_invalid" and "enduser.id" in report["results"][2]["message"]
    assert report["results"][3]["code"] == "customer_not_found"
    assert out["partialSuccess"]["rejectedSpans"] == "2"
    parsed = ParseDict(out, ExportTraceServiceResponse(), ignore_unknown_fields=True)  # OTLP's own response
    assert parsed.partial_success.rejected_spans == 2
    assert _stored(api.engine) == [("acme", "llm.call", "gpt-4o-2024-08-06"),
                                   ("globex", "llm.call", "gpt-4o-2024-08-06")]
    again = api(TRACES, hex_ids(body)).json()  # the exporter retrying, ids in hex this time
    assert again["billing"]["duplicates"] == 2 and again["billing"]["accepted"] == 0
    assert len(_stored(api.engine)) == 2


def test_http_no_genai_spans_is_accepted_with_zero_events_reported(api):
    body = sdk_otlp_json([{"name": "http GET", "attributes": {"http.method": "GET"}, "start": NOW, "end": NOW}])
    r = api(TRACES, body)
    assert r.status_code == 200
    assert r.json()["partialSuccess"]["rejectedSpans"] == "0"
    assert "no span carried GenAI attributes" in r.json()["partialSuccess"]["errorMessage"]
    assert r.json()["billing"]["accepted"] == 0 and r.json()["billing"]["skipped"] == 1
    assert _stored(api.engine) == []


def test_http_bad_payloads_are_4xx_never_500(api):
    r = api(TRACES, {"resourceSpans": {"oops": 1}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    assert r.json()["error"]["details"] == {"field": "resourceSpans"}
    assert api(TRACES, [1, 2]).status_code == 422
    r = api(TRACES, sdk_otlp_json([chat("globex")]), key="acme")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert api(TRACES, {}, content_type="application/x-protobuf").status_code == 415
