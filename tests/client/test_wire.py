"""``HttpClient``'s own HTTP path (``billing.client.wire``, used for a plain ``http://``
service): the same retries, keys, errors and timeouts as over httpx, keep-alive connections
reused, a connection the server dropped while idle replaced at once; against a scripted
server and a real one."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.client import ApiError, HttpClient, RetryPolicy, guarded_call
from billing.client import wire
from billing.errors import ErrorCode
from tests.support.client import CAT, Env, serve_app, subscribe_all
from tests.support.scripted_http import scripted
from tests.support.sdk_shapes import anthropic_message

FAST = RetryPolicy(attempts=6, base_delay=0.001, max_delay=0.002)
ONCE = RetryPolicy(attempts=1)


def _client(url: str, retry: RetryPolicy = FAST, **kw) -> HttpClient:
    client = HttpClient(url, "bk_test", retry=retry, spool_dir=False, **kw)
    assert isinstance(client._http, wire.RawHttp)
    return client


def test_lost_answers_and_5xx_are_retried_with_one_key_and_the_same_body():
    with scripted(["lost", "503", "502", "in_use", "lost"]) as server, _client(server.url) as client:
        answer = client.reserve("acme", "messages", model="m", request_id="r1")
        assert answer["reservation_id"] == "rsv_1"
        assert len(server.requests) == 6
        targets = {r[1] for r in server.requests}
        keys = {r[2]["idempotency-key"] for r in server.requests}
        bodies = {r[3] for r in server.requests}
        assert targets == {"/v1/quota/reserve"} and len(keys) == 1 and len(bodies) == 1
        assert json.loads(bodies.pop()) == {"customer": "acme", "meter": "messages", "model": "m", "quantity": "1",
                                            "request_id": "r1", "ttl_seconds": 60.0}
        assert server.requests[0][2]["authorization"] == "Bearer bk_test"
        assert server.requests[0][2]["content-type"] == "application/json"


def test_other_4xx_are_answers_never_retried():
    with scripted(["404"]) as server, _client(server.url) as client:
        with pytest.raises(ApiError) as err:
            client.usage("no body")
        assert (err.value.status, err.value.code, err.value.request_id) == (404, ErrorCode.CUSTOMER_NOT_FOUND,
                                                                            "req_404")
        assert [r[1] for r in server.requests] == ["/v1/customers/no%20body/usage"]
        assert "idempotency-key" not in server.requests[0][2]


def test_a_502_without_json_is_an_api_error_after_the_retries():
    with scripted(["502"] * 3) as server, _client(server.url, RetryPolicy(attempts=3, base_delay=0.001,
                                                                          max_delay=0.001)) as client:
        with pytest.raises(ApiError) as err:
            client.check("acme", "messages")
        assert (err.value.status, err.value.raw_code, err.value.message) == (502, "http_502", "bad gateway")
        assert len(server.requests) == 3


def test_a_connection_is_kept_alive_and_one_dropped_while_idle_is_replaced_at_once():
    with scripted(["ok", "ok", "ok_then_drop", "ok", "ok_close", "ok"]) as server, \
            _client(server.url, ONCE) as client:  # ONCE: no retry hides a failure
        for _ in range(6):
            assert client.release("rsv_1")["reservation_id"] == "rsv_1"
        # 1-3 on the first connection; 4 fails on it (dropped) and is sent again on a second,
        # 5 is answered with "connection: close", so 6 opens a third
        assert [r[0] for r in server.requests] == [1, 1, 1, 2, 2, 3]
        assert server.connections == 3


def test_a_fresh_connection_that_loses_the_answer_is_a_transport_error():
    with scripted(["lost"]) as server, _client(server.url, ONCE) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.commit("rsv_1", {"id": "e"})
        assert len(server.requests) == 1


def test_timeouts_and_refused_connections_raise_httpx_errors():
    with scripted(["silent"]) as server, _client(server.url, ONCE, timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.check("acme", "messages")
    with socket.socket() as bound:  # a port taken, nobody listening: refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        with _client(url, RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.001)) as client:
            with pytest.raises(httpx.ConnectError):
                client.check("acme", "messages")


def test_chunked_answers_and_a_base_path_prefix():
    with scripted(["chunked"]) as server, _client(server.url + "/billing/") as client:
        assert client.check("acme", "messages") == {"granted": True, "n": 2}
        assert server.requests[0][1] == "/billing/v1/quota/check"


def test_httpx_is_used_for_tls_proxies_transports_and_httpx_timeouts(monkeypatch):
    for key in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(key, raising=False)
    assert wire.usable("http://127.0.0.1:8000") and not wire.usable("https://billing.example")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    assert not wire.usable("http://billing.internal:8000")
    monkeypatch.setenv("NO_PROXY", "billing.internal")
    assert wire.usable("http://billing.internal:8000")
    with HttpClient("http://x", "k", spool_dir=False, transport=httpx.MockTransport(lambda r: httpx.Response(200))) \
            as c1, HttpClient("http://127.0.0.1:9", "k", spool_dir=False, timeout=httpx.Timeout(3.0)) as c2:
        assert isinstance(c1._http, httpx.Client) and isinstance(c2._http, httpx.Client)


def test_guarded_calls_from_threads_over_a_real_server_share_few_connections(sqlite_engine, tmp_path):
    subscribe_all(sqlite_engine)
    app = create_app(sqlite_engine, CAT, context_ttl=0)
    _, key = create_key(sqlite_engine, "admin")
    with serve_app(app) as base, HttpClient(base, key, spool_dir=tmp_path / "spool", retry=FAST,
                                            background_commits=True) as client:
        from concurrent.futures import ThreadPoolExecutor

        assert isinstance(client._http, wire.RawHttp)
        with ThreadPoolExecutor(4) as pool:
            outs = list(pool.map(lambda _: guarded_call(client, "bot", "messages",
                                                        lambda m: anthropic_message(model="claude-sonnet-4-5"),
                                                        properties={"feature": "support-chat"}), range(12)))
        assert all(o.queued == 1 for o in outs) and client.drain(30)
        assert client.background_counts() == {"delivered": 12, "kept": 0, "rejected": 0}
        assert len(client._http._idle) <= 4 + 2  # the callers' and the senders' connections, reused
        env = Env(client, sqlite_engine, None, "http")
        assert env.used("bot", "messages") == "12" and len(env.events("bot")) == 12
        with pytest.raises(ApiError) as err:
            client.check("nobody", "requests")
        assert err.value.code == ErrorCode.CUSTOMER_NOT_FOUND and err.value.request_id.startswith("req_")


def test_pooled_ids_are_uuid4_unique_and_never_shared_with_a_forked_child():
    import os
    import uuid

    from billing.client.base import random_uuid

    ids = [random_uuid() for _ in range(1000)]  # several refills of the pool
    assert len(set(ids)) == 1000 and all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)
    random_uuid()  # the pool part-used when the process forks
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.write(write, "".join(random_uuid().hex for _ in range(8)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode()
    os.close(read)
    parent = "".join(random_uuid().hex for _ in range(8))
    assert len(child) == len(parent) == 256 and child != parent
    assert not {child[i:i + 32] for i in range(0, 256, 32)} & {parent[i:i + 32] for i in range(0, 256, 32)}


def test_a_forked_child_opens_its_own_connection():
    import os

    with scripted() as server, _client(server.url) as client:
        client.release("rsv_1")  # one connection, pooled
        pid = os.fork()
        if pid == 0:
            try:
                client.release("rsv_1")
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        client.release("rsv_1")
        # the parent reuses its connection; the child opened a second one
        assert [r[0] for r in server.requests] == [1, 2, 1] and server.connections == 2


def test_a_body_ended_by_the_close_is_read_and_a_torn_head_is_a_protocol_error():
    with scripted(["until_close", "torn_head"]) as server, _client(server.url, ONCE) as client:
        assert client.check("acme", "messages") == {"granted": False}
        with pytest.raises(httpx.RemoteProtocolError):
            client.check("acme", "messages")
        assert server.connections == 2  # the first connection was not kept
