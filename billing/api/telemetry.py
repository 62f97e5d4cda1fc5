"""Request ids, Prometheus metrics and structured logs for the HTTP API.

Every response carries ``X-Request-Id``: the caller's (when it sent a sane one: up to 128
printable ASCII characters) or a new ``req_<hex>``; the access log line of the request (one
JSON object per line with ``billing serve --log-format json``) carries it too.

``GET /metrics`` (Prometheus text format 0.0.4, no authentication: expose it only where
your Prometheus scrapes) reports, for this process since it started:

* ``billing_http_requests_total{method,route,status}`` and
  ``billing_http_request_duration_seconds{method,route}`` (a histogram): per route template
  (``/v1/invoices/{invoice_id}``, never the raw path: an unknown path counts as ``unmatched``);
* ``billing_events_total{status}``: events recorded through ``POST /v1/events`` by result
  (accepted, duplicate, conflict, rejected);
* ``billing_quota_decisions_total{outcome}``: quota checks and reservations by outcome;
* ``billing_outbox_backlog``: webhook deliveries waiting (read from the database at scrape).

With ``billing serve --workers N`` each process counts its own requests (as with any
multi-process Prometheus client, scrape each or run one worker per container).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("billing.access")

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_HEADER = b"x-request-id"
_MAX_ID = 128


class Metrics:
    """This process's counters (thread-safe: sync routes run in a thread pool)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], list[float]] = {}  # bucket counts..., then sum, count
        self.events: dict[str, int] = {}
        self.decisions: dict[str, int] = {}

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, route, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            hist = self.latency.get((method, route))
            if hist is None:
                hist = self.latency[(method, route)] = [0.0] * (len(BUCKETS) + 2)
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    hist[i] += 1
                    break
            hist[-2] += seconds
            hist[-1] += 1

    def recorded(self, counts: dict[str, int]) -> None:
        with self._lock:
            for status, n in counts.items():
                if n:
                    self.events[status] = self.events.get(status, 0) + n

    def decided(self, outcome: str) -> None:
        with self._lock:
            self.decisions[outcome] = self.decisions.get(outcome, 0) + 1

    def render(self, backlog: int | None, contexts: tuple[int, int, int] | None = None) -> str:
        """The Prometheus text exposition of everything counted; ``contexts``: the quota
        context cache's hits, misses and size (``Quota.context_hits``...)."""
        with self._lock:
            requests, latency = dict(self.requests), {k: list(v) for k, v in self.latency.items()}
            events, decisions = dict(self.events), dict(self.decisions)
        out = ["# HELP billing_http_requests_total HTTP requests by method, route template and status.",
               "# TYPE billing_http_requests_total counter"]
        for (method, route, status), n in sorted(requests.items()):
            out.append(f'billing_http_requests_total{{method="{method}",route="{_label(route)}",status="{status}"}} {n}')
        out += ["# HELP billing_http_request_duration_seconds HTTP request latency by method and route template.",
                "# TYPE billing_http_request_duration_seconds histogram"]
        for (method, route), hist in sorted(latency.items()):
            labels = f'method="{method}",route="{_label(route)}"'
            running = 0.0
            for bound, n in zip(BUCKETS, hist):
                running += n
                out.append(f'billing_http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {int(running)}')
            out.append(f'billing_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {int(hist[-1])}')
            out.append(f"billing_http_request_duration_seconds_sum{{{labels}}} {hist[-2]:.6f}")
            out.append(f"billing_http_request_duration_seconds_count{{{labels}}} {int(hist[-1])}")
        out += ["# HELP billing_events_total Usage events recorded through POST /v1/events, by result.",
                "# TYPE billing_events_total counter"]
        out += [f'billing_events_total{{status="{s}"}} {n}' for s, n in sorted(events.items())]
        out += ["# HELP billing_quota_decisions_total Quota checks and reservations, by outcome.",
                "# TYPE billing_quota_decisions_total counter"]
        out += [f'billing_quota_decisions_total{{outcome="{o}"}} {n}' for o, n in sorted(decisions.items())]
        if contexts is not None:
            hits, misses, size = contexts
            out += ["# HELP billing_quota_context_cache_total Quota context lookups, by result (a miss loads it).",
                    "# TYPE billing_quota_context_cache_total counter",
                    f'billing_quota_context_cache_total{{result="hit"}} {hits}',
                    f'billing_quota_context_cache_total{{result="miss"}} {misses}',
                    "# HELP billing_quota_context_cache_size Quota contexts cached now.",
                    "# TYPE billing_quota_context_cache_size gauge", f"billing_quota_context_cache_size {size}"]
        if backlog is not None:
            out += ["# HELP billing_outbox_backlog Webhook deliveries waiting in the outbox.",
                    "# TYPE billing_outbox_backlog gauge", f"billing_outbox_backlog {backlog}"]
        return "\n".join(out) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's ``X-Request-Id`` when it is sane, else a new one."""
    for name, value in headers:
        if name == _HEADER:
            if 0 < len(value) <= _MAX_ID and all(33 <= b < 127 for b in value):
                return value.decode("ascii")
            break
    return "req_" + os.urandom(12).hex()


def _route(scope: dict) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return path
    return scope["path"] if scope.get("fast_route") else "unmatched"


def layer(metrics: Metrics) -> Callable[[Callable], Callable]:
    """An ASGI wrapper: request id in, ``X-Request-Id`` out, the request counted and logged."""

    def wrap(app: Callable) -> Callable:
        async def telemetry(scope: dict, receive: Callable, send: Callable) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            rid = request_id(scope["headers"])
            scope.setdefault("state", {})["request_id"] = rid
            started = time.perf_counter()
            status = 500

            async def send_with_id(message: dict) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message = {**message, "headers": [*message.get("headers", ()), (_HEADER, rid.encode())]}
                await send(message)

            try:
                await app(scope, receive, send_with_id)
            finally:
                took = time.perf_counter() - started
                route = _route(scope)
                metrics.request(scope["method"], route, status, took)
                if log.isEnabledFor(logging.INFO):
                    log.info("%s %s %s", scope["method"], scope["path"], status,
                             extra={"request_id": rid, "method": scope["method"], "path": scope["path"],
                                    "route": route, "status": status, "duration_ms": round(took * 1000, 3)})
        return telemetry

    return wrap


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message, and the request's fields."""

    FIELDS = ("request_id", "method", "path", "route", "status", "duration_ms")

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                               "logger": record.name, "message": record.getMessage()}
        for name in self.FIELDS:
            if hasattr(record, name):
                doc[name] = getattr(record, name)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def log_config(fmt: str, level: str) -> dict:
    """uvicorn's ``log_config``: ``json`` (one object per line, the access log with request
    ids) or ``text``."""
    formatter = {"()": "billing.api.telemetry.JsonFormatter"} if fmt == "json" else {
        "format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    return {"version": 1, "disable_existing_loggers": False, "formatters": {"default": formatter},
            "handlers": {"default": handler},
            "loggers": {"billing": {"handlers": ["default"], "level": level.upper(), "propagate": False},
                        "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
                        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False}}}


def install(app: Any, outbox: Any) -> Metrics:
    """Request ids and metrics around every request of ``app`` (a ``BillingAPI``), and its
    ``GET /metrics``."""
    from fastapi.responses import PlainTextResponse

    metrics = Metrics()
    app.state.metrics = metrics
    app.wrap_all(layer(metrics))

    def metrics_page():  # (no return annotation: FastAPI would make it a response model)
        try:
            backlog = outbox.backlog()
        except Exception:  # noqa: BLE001 - a scrape still answers when the database does not
            backlog = None
        quota = app.state.services.quota
        contexts = (quota.context_hits, quota.context_misses, len(quota._ctx_cache))
        return PlainTextResponse(metrics.render(backlog, contexts), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.get("/metrics", tags=["meta"], summary="Prometheus metrics of this process (no authentication)",
            response_class=PlainTextResponse, responses={200: {
                "description": "Prometheus text exposition format 0.0.4",
                "content": {"text/plain; version=0.0.4; charset=utf-8": {"schema": {"type": "string"}}}}})(metrics_page)
    return metrics


def count_decision(state: Any, decision: dict) -> None:
    """A quota decision's outcome, counted (``state``: the app's)."""
    metrics = getattr(state, "metrics", None)
    if metrics is not None:
        metrics.decided(str(decision.get("outcome")))
