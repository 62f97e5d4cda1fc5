"""The API's outermost layer (``billing.api.limits``): a request-size limit on every route,
enforced before parsing and authentication, with and without ``Content-Length``; a JSON 500
as the last resort that keeps the keep-alive connection usable.

In process (every route of the OpenAPI schema and the fast path), and over real sockets: a
`billing serve` process whose peak memory stays bounded under four concurrent 100 MB
uploads, and one HTTP/1.1 connection that gets a 500 and then a good answer.
"""

from __future__ import annotations

import http.client
import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from tests.support.live_server import billing_serve, peak_rss_kib, raw_request, rss_kib, uvicorn_thread
from tests.support.quota import BLOCK_PLAN, Clock, catalog

CAT = catalog()
LIMIT = 4096


def _routes(app) -> list[tuple[str, str]]:
    """(method, path) of every operation in the OpenAPI schema, path parameters filled in."""
    out = []
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            out.append((method.upper(), re.sub(r"\{[^}]+\}", "1", path)))
    return out


@pytest.fixture
def small_app(sqlite_engine):
    return create_app(sqlite_engine, CAT, clock=Clock(), context_ttl=0, key_cache_ttl=0, max_request_bytes=LIMIT)


def test_every_route_refuses_an_oversized_body_before_authentication(small_app):
    client = TestClient(small_app)
    routes = _routes(small_app)
    assert ("POST", "/v1/quota/check") in routes and ("POST", "/v1/events") in routes and len(routes) > 12
    for method, path in routes:
        for label, content in (("content-length", b"{" + b" " * LIMIT + b"}"),
                               ("chunked", iter([b"{", b" " * (LIMIT // 2), b" " * LIMIT, b"}"]))):
            r = client.request(method, path, content=content, headers={"content-type": "application/json"})
            assert r.status_code == 413, (method, path, label, r.status_code, r.text)
            error = r.json()["error"]
            assert (error["type"], error["code"], error["message"]) == (
                "invalid_request_error", "request_too_large", f"the request body is over the limit of {LIMIT:,} bytes")
            assert error["request_id"] == r.headers["x-request-id"]
            assert r.headers["connection"] == "close"


def test_a_body_at_the_limit_is_served(small_app, sqlite_engine):
    client = TestClient(small_app)
    key = create_key(sqlite_engine, "admin")[1]
    body = json.dumps({"id": "acme", "name": "x" * 100}).encode()
    body = body[:-1] + b" " * (LIMIT - len(body)) + b"}"
    assert len(body) == LIMIT
    r = client.post("/v1/customers", content=body, headers={"Authorization": f"Bearer {key}",
                                                            "content-type": "application/json"})
    assert r.status_code == 201, r.text
    chunked = client.post("/v1/customers", content=iter([body[:100], body[100:]]),
                          headers={"Authorization": f"Bearer {key}", "content-type": "application/json"})
    assert chunked.status_code == 201, chunked.text


def test_the_fast_path_keeps_its_smaller_limit(sqlite_engine):
    app = create_app(sqlite_engine, CAT, clock=Clock(), context_ttl=0, key_cache_ttl=0)
    key = create_key(sqlite_engine, "check")[1]
    r = TestClient(app).post("/v1/quota/check", json={"customer": "acme", "meter": "requests", "model": "x" * 70_000},
                             headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


# ------------------------------------------------------------------ over real sockets

UPLOAD = 100 * 1024 * 1024
CHUNK = 1024 * 1024


def _upload(port: int, path: str, chunked: bool) -> tuple[int, int]:
    """One unauthenticated 100 MB POST; (the answer's status, body bytes the server took)."""
    if chunked:
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n").encode()
        piece = b"%x\r\n" % CHUNK + b" " * CHUNK + b"\r\n"
        chunks = [piece] * (UPLOAD // CHUNK) + [b"0\r\n\r\n"]
    else:
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {UPLOAD}\r\n\r\n").encode()
        chunks = [b" " * CHUNK] * (UPLOAD // CHUNK)
    answer, sent = raw_request(port, head, chunks, timeout=120)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, sent


@pytest.mark.slow
def test_four_100mb_uploads_leave_the_server_memory_bounded(tmp_path):
    """The issue's probe: four unauthenticated 100 MB POSTs took a server from 104 MB to
    714 MB before it answered 401. Each now gets 413 after at most the limit (5 MiB) is
    read, and the server's peak resident memory grows by less than 64 MiB."""
    from tests.support.db import sqlite_database

    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "blocky.yaml").write_text(BLOCK_PLAN)
    with sqlite_database(tmp_path) as url, billing_serve(url, plans, tmp_path / "serve.log") as (proc, base):
        port = int(base.rsplit(":", 1)[1])
        before = rss_kib(proc.pid)
        uploads = [("/v1/events", False), ("/v1/quota/check", True), ("/v1/customers", True),
                   ("/v1/stripe/webhook", False)]
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda u: _upload(port, *u), uploads))
        peak = peak_rss_kib(proc.pid)
        print(f"billing serve resident memory: {before // 1024} MiB before, peak {peak // 1024} MiB")  # pytest -s
        assert proc.poll() is None
        assert [status for status, _ in results] == [413] * 4, results
        # the server stopped taking bytes soon after the limit (socket buffers hold a few MB)
        assert all(sent < 40 * CHUNK for _, sent in results), results
        assert peak - before < 64 * 1024, f"peak RSS grew {(peak - before) // 1024} MiB (from {before // 1024} MiB)"
        # and it still serves
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200


def _broken_router() -> APIRouter:
    router = APIRouter()

    @router.get("/v1/test-broken")
    def broken() -> dict:
        raise RuntimeError("a bug, not the client's fault")

    return router


def test_a_500_keeps_the_keep_alive_connection_usable(sqlite_engine, caplog):
    """One HTTP/1.1 connection: a request the server fails on, then a good one on the same
    socket (uvicorn used to close the connection after Starlette re-raised the error)."""
    key = create_key(sqlite_engine, "check")[1]
    app = create_app(sqlite_engine, CAT, clock=Clock(), context_ttl=0, key_cache_ttl=0,
                     extra_routers=[_broken_router()])

    def broken_check(*_args, **_kwargs):
        raise RuntimeError("a bug in the fast path")

    app.state.services.quota.check = broken_check
    with uvicorn_thread(app) as base:
        conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        requests = [("GET", "/v1/test-broken", None, 500), ("GET", "/healthz", None, 200),
                    ("POST", "/v1/quota/check", b'{"customer": "acme", "meter": "requests"}', 500),
                    ("GET", "/v1/test-broken", None, 500), ("GET", "/v1/plans", None, 403)]
        socket_of_first = None
        for method, path, body, status in requests:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            assert response.status == status, (path, response.status, payload)
            assert not response.will_close, (path, response.getheaders())
            if status == 500:
                error = json.loads(payload)["error"]
                assert (error["type"], error["code"], error["message"]) == ("api_error", "internal_error",
                                                                            "internal error")
                assert error["request_id"] == response.getheader("x-request-id")
            socket_of_first = socket_of_first or conn.sock
            assert conn.sock is socket_of_first  # the same connection all along
        conn.close()
