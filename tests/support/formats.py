"""The standard-format tests' API (``formats_api``) and the OTLP JSON the OpenTelemetry SDK's
own exporter serialisation produces (``sdk_otlp_json``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.ledger.accounts import Accounts
from tests.support.quota import T0, Clock, catalog

CAT = catalog()


def formats_api(engine) -> Iterator[Any]:
    """``post(path, body, content_type, key="ingest")`` against an app with customers
    ``acme`` and ``globex`` on the token-api plan (generator: a fixture yields from it)."""
    accounts = Accounts(engine, CAT)
    for customer in ("acme", "globex"):
        accounts.create_customer(customer, now=T0)
        accounts.subscribe(customer, "token-api", at=T0)
    keys = {"ingest": create_key(engine, "ingest")[1], "acme": create_key(engine, "ingest", customer="acme")[1]}
    with TestClient(create_app(engine, CAT, clock=Clock(), context_ttl=0)) as http:
        def post(path: str, body: Any, content_type: str = "application/json", key: str = "ingest"):
            return http.post(path, content=json.dumps(body).encode(),
                             headers={"Authorization": f"Bearer {keys[key]}", "Content-Type": content_type})
        post.engine, post.http = engine, http
        yield post


def nanos(t: datetime) -> int:
    return int(t.timestamp()) * 10**9 + t.microsecond * 1000


def sdk_otlp_json(spans: list[dict[str, Any]], resource: dict[str, Any] | None = None) -> dict[str, Any]:
    """An ``ExportTraceServiceRequest`` as JSON, made by the SDK: each of ``spans``
    (``name``, ``attributes``, ``start``, ``end`` datetimes) is started and ended by a real
    tracer, and the finished spans go through the OTLP exporter's encoder
    (``encode_spans``) and protobuf's ``MessageToJson``."""
    from google.protobuf.json_format import MessageToJson
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource or {}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.formats")
    for spec in spans:
        span = tracer.start_span(spec["name"], attributes=spec.get("attributes"), start_time=nanos(spec["start"]))
        span.end(end_time=nanos(spec["end"]))
    provider.shutdown()
    return json.loads(MessageToJson(encode_spans(exporter.get_finished_spans())))


def hex_ids(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with its trace and span ids in hex, as OTLP/HTTP JSON sends them (protobuf's
    JSON mapping writes bytes in base64)."""
    import base64

    out = json.loads(json.dumps(body))
    for rs in out.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for name in ("traceId", "spanId", "parentSpanId"):
                    if span.get(name):
                        span[name] = base64.b64decode(span[name]).hex()
    return out
