"""The durable spool: guarded_call writes each commit to disk before sending it and deletes
it once acknowledged. A process killed between the LLM call and the acknowledgement, or a
service unreachable past the retries, loses nothing: a flush records the usage exactly
once. Refused commits are kept apart, never dropped; concurrent flushers never send a
commit twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.client import ApiError, HttpClient, RetryPolicy, Spool, guarded_call
from billing.client.spool import commit_entry
from tests.support.client import CAT, ROOT, Env, child_env, serve_app, subscribe_all
from tests.support.faults import FaultTransport
from tests.support.quota import Clock
from tests.support.sdk_shapes import anthropic_message

FAST = RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.001)
CHILD = Path(__file__).resolve().parents[1] / "support" / "spool_child.py"
SONNET = "claude-sonnet-4-5"


def test_spool_files_are_atomic_locked_and_settled(tmp_path):
    spool = Spool(tmp_path / "s")
    held = spool.add([commit_entry("rsv_a", {"id": "rsv_a", "customer": "c"}, "key-a"),
                      commit_entry("rsv_b", {"id": "rsv_b", "customer": "c"}, "key-b")])
    paths = spool.pending()
    assert paths == [h.path for h in held] and [p.name.split("-", 1)[1] for p in paths] == ["key-a.json", "key-b.json"]
    assert json.loads(paths[0].read_text())["event"] == {"id": "rsv_a", "customer": "c"}
    assert not list((tmp_path / "s").glob(".*.tmp"))
    assert spool.claim(paths[0]) is None  # locked by its writer (another open file)
    spool.keep(held[0])
    claimed = spool.claim(paths[0])
    assert claimed is not None and claimed.data["idempotency_key"] == "key-a"
    spool.done(claimed)
    spool.reject(held[1], {"code": "event_invalid", "message": "bad"})
    assert spool.pending() == [] and [p.name for p in spool.rejected()] == [paths[1].name]
    assert json.loads(spool.rejected()[0].read_text())["error"]["code"] == "event_invalid"
    (tmp_path / "s" / "00000000000000000001-junk.json").write_text("{not json")
    assert spool.claim(tmp_path / "s" / "00000000000000000001-junk.json") is None
    assert len(spool.rejected()) == 2 and spool.pending() == []


def _unreachable_commits(env_engine, tmp_path, customer="split", meter="requests", calls=1):
    """guarded_call with every commit refused a connection: the commits stay in the spool."""
    subscribe_all(env_engine)
    clock = Clock()
    app = create_app(env_engine, CAT, clock=clock, context_ttl=0)
    _, key = create_key(env_engine, "admin")
    transport = FaultTransport(TestClient(app, base_url="http://testserver")._transport,
                               {"/v1/quota/commit": ["connect"] * 1000})
    client = HttpClient("http://testserver", key, transport=transport, retry=FAST, spool_dir=tmp_path / "spool",
                        clock=clock)
    outs = [guarded_call(client, customer, meter, lambda model: anthropic_message(model=SONNET))
            for _ in range(calls)]
    transport.faults.clear()  # the service is back
    working = HttpClient("http://testserver", key, transport=transport, retry=FAST, spool_dir=tmp_path / "spool",
                         clock=clock)
    return Env(working, env_engine, clock, "http", app, key), outs, transport


def test_unreachable_commits_are_spooled_then_flushed_once(any_engine, tmp_path):
    env, (out,), transport = _unreachable_commits(any_engine, tmp_path)
    assert out.response is not None and not out.recorded and out.spooled == 2
    assert [c["status"] for c in out.commits] == ["spooled", "spooled"]
    assert len(env.client.spool.pending()) == 2 and env.events("split") == []
    report = env.client.flush_spool()
    assert report == {"delivered": 2, "rejected": 0, "pending": 0, "errors": []}
    assert env.client.flush_spool()["delivered"] == 0
    assert env.used("split", "requests") == "1" and env.used("split", "input_tokens") == "50"
    assert len(env.events("split")) == 2 and env.holds("split") == ["committed", "committed"]
    # sent again from the spool: the same bytes under the same key (a key reused with other
    # parameters would be refused as idempotency_key_reused)
    sent = {}
    for (_m, path, key, _f), (_p, body) in zip(transport.log, transport.bodies):
        if path == "/v1/quota/commit":
            sent.setdefault(key, set()).add(body)
    assert len(sent) == 2 and all(len(bodies) == 1 for bodies in sent.values())


def test_the_next_call_flushes_older_commits(sqlite_engine, tmp_path):
    env, _, _ = _unreachable_commits(sqlite_engine, tmp_path)
    out = guarded_call(env.client, "split", "requests", lambda model: anthropic_message(model=SONNET))
    assert out.recorded and env.client.spool.pending() == []
    assert env.used("split", "requests") == "2" and len(env.events("split")) == 4


def test_a_released_hold_is_recorded_as_an_event(sqlite_engine, tmp_path):
    env, _, _ = _unreachable_commits(sqlite_engine, tmp_path, customer="bot", meter="messages")
    (path,) = env.client.spool.pending()
    env.client.release(json.loads(path.read_text())["reservation_id"])  # e.g. expired and purged
    assert env.client.flush_spool()["delivered"] == 1
    (event,) = env.events("bot")
    assert event["properties"]["input_tokens"] == 50 and event["cost_pico"] > 0


def test_a_refused_commit_is_kept_apart(sqlite_engine, tmp_path):
    env, _, _ = _unreachable_commits(sqlite_engine, tmp_path, customer="bot", meter="messages")
    (path,) = env.client.spool.pending()
    entry = json.loads(path.read_text())
    entry["event"]["properties"]["input_tokens"] = -1  # a commit the service cannot take
    path.write_text(json.dumps(entry))
    report = env.client.flush_spool()
    assert report["rejected"] == 1 and report["errors"][0]["code"] == "negative_quantity"
    (kept,) = env.client.spool.rejected()
    assert json.loads(kept.read_text())["reservation_id"] == entry["reservation_id"]


@pytest.mark.slow
@pytest.mark.parametrize("point", ["before_send", "after_send"])
def test_kill_9_between_the_call_and_the_acknowledgement_loses_nothing(any_engine, tmp_path, point):
    subscribe_all(any_engine)
    app = create_app(any_engine, CAT, context_ttl=0)  # the real clock, as the child's
    _, key = create_key(any_engine, "admin")
    spool_dir = tmp_path / "spool"
    with serve_app(app) as base:
        child = subprocess.run([sys.executable, str(CHILD), base, key, str(spool_dir), point, "split", "requests"],
                               env=child_env(), capture_output=True, text=True, timeout=120)
        assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
        spool = Spool(spool_dir)
        assert len(spool.pending()) == 2  # both commits of the call, written before the first was sent
        client = HttpClient(base, key, spool_dir=spool_dir, retry=FAST)
        env = Env(client, any_engine, None, "http")
        assert len(env.events("split")) == (1 if point == "after_send" else 0)
        assert client.flush_spool() == {"delivered": 2, "rejected": 0, "pending": 0, "errors": []}
        assert env.used("split", "requests") == "1" and env.used("split", "input_tokens") == "50"
        assert len(env.events("split")) == 2 and env.holds("split") == ["committed", "committed"]
        assert spool.pending() == [] and spool.rejected() == []


@pytest.mark.slow
def test_two_flushers_at_once_send_each_commit_once(any_engine, tmp_path):
    """Two `billing client flush-spool` processes on one spool, against a real server."""
    subscribe_all(any_engine)
    app = create_app(any_engine, CAT, context_ttl=0)
    _, key = create_key(any_engine, "admin")
    spool_dir = tmp_path / "spool"
    with serve_app(app) as base:
        env = Env(None, any_engine, None, "http")
        unreachable = HttpClient(base, key, spool_dir=spool_dir, retry=FAST,
                                 transport=FaultTransport(httpx.HTTPTransport(),
                                                          {"/v1/quota/commit": ["connect"] * 1000}))
        for _ in range(40):  # 40 calls, 40 spooled commits (the bot plan includes 100 messages)
            guarded_call(unreachable, "bot", "messages", lambda model: anthropic_message(model=SONNET),
                         properties={"feature": "support-chat"})
        assert len(Spool(spool_dir).pending()) == 40
        command = [sys.executable, "-c", "from billing.cli import app; app()", "client", "flush-spool",
                   str(spool_dir), "--url", base, "--api-key", key, "--json"]
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda _: subprocess.run(command, env=child_env(), capture_output=True, text=True,
                                                          timeout=120, cwd=ROOT), range(2)))
        reports = [json.loads(r.stdout) for r in runs]
        assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
        assert sum(r["delivered"] for r in reports) == 40 and all(r["rejected"] == 0 for r in reports)
        client = HttpClient(base, key, spool_dir=spool_dir)
        env.client = client
        assert env.used("bot", "messages") == "40" and len(env.events("bot")) == 40
        assert Spool(spool_dir).pending() == []


def test_the_largest_usage_is_kept_when_refused_and_never_raises(sqlite_engine, tmp_path):
    """Token counts past what one event may carry (10^12): the service refuses the commit, the
    caller still gets the response, and the commit is kept in rejected/ with the reason."""
    from tests.support.client import make_env

    env = make_env("http", sqlite_engine, tmp_path)
    huge = anthropic_message(model=SONNET, inp=10**13)
    out = guarded_call(env.client, "split", "requests", lambda model: huge)
    assert out.response is huge and not out.recorded
    assert [c["status"] for c in out.commits] == ["committed", "refused"]
    assert out.refused[0]["code"] == "quantity_too_large"
    (kept,) = env.client.spool.rejected()
    assert json.loads(kept.read_text())["event"]["properties"]["input_tokens"] == 10**13
    assert env.client.spool.pending() == []


@pytest.mark.slow
def test_flush_spool_command_exit_codes(sqlite_engine, tmp_path):
    from typer.testing import CliRunner

    from billing.cli import app as cli

    env, _, _ = _unreachable_commits(sqlite_engine, tmp_path, customer="bot", meter="messages")
    spool_dir = str(env.client.spool.directory)
    runner = CliRunner()
    down = runner.invoke(cli, ["client", "flush-spool", spool_dir, "--url", "http://127.0.0.1:9",
                               "--api-key", env.key, "--json"], env={"BILLING_CLIENT_SPOOL_DIR": ""})
    assert down.exit_code == 1 and json.loads(down.stdout)["pending"] == 1
    missing = runner.invoke(cli, ["client", "flush-spool", str(tmp_path / "nope"), "--url", "http://x",
                                  "--api-key", "k"])
    assert missing.exit_code == 2 and "not a directory" in missing.output


def test_a_spool_failing_while_settling_never_raises_after_the_call(sqlite_engine, tmp_path, monkeypatch):
    from tests.support.client import make_env

    env = make_env("http", sqlite_engine, tmp_path)

    def full(self, held, error):
        raise OSError(28, "No space left on device")

    def refused(*args, **kwargs):
        raise ApiError("bad event", code="event_invalid", status=422)

    env.client.commit = refused
    monkeypatch.setattr(Spool, "reject", full)
    out = guarded_call(env.client, "bot", "messages", lambda model: anthropic_message(model=SONNET),
                       properties={"feature": "support-chat"})
    assert out.response is not None and out.commits[0]["status"] == "spooled"
    assert len(env.client.spool.pending()) == 1  # still on disk, for a later flush
