"""``HttpClient(background_commits=True)``: guarded_call appends its commits to the spool's
journal (one write, no fsync) and returns; background threads fsync the journal for many
calls at once and send the commits. Nothing is lost: a ``kill -9`` right after the call
returned leaves the journal, which the next flush turns into spool files and sends once;
a service unreachable or refusing leaves the commits in the ordinary spool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.client import HttpClient, RetryPolicy, Spool, guarded_call
from billing.client.journal import Journal, recover
from billing.client.spool import commit_entry
from tests.support.client import CAT, Env, child_env, serve_app, subscribe_all
from tests.support.faults import FaultTransport
from tests.support.quota import Clock
from tests.support.sdk_shapes import anthropic_message

FAST = RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.001)
CHILD = Path(__file__).resolve().parents[1] / "support" / "spool_child.py"
SONNET = "claude-sonnet-4-5"


def _env(engine, tmp_path, faults=None):
    subscribe_all(engine)
    clock = Clock()
    app = create_app(engine, CAT, clock=clock, context_ttl=0)
    _, key = create_key(engine, "admin")
    transport = FaultTransport(TestClient(app, base_url="http://testserver")._transport, faults or {})
    client = HttpClient("http://testserver", key, transport=transport, retry=FAST, spool_dir=tmp_path / "spool",
                        clock=clock, background_commits=True)
    return Env(client, engine, clock, "http", app, key), transport


def test_commits_are_queued_then_recorded_once(any_engine, tmp_path):
    env, _ = _env(any_engine, tmp_path)
    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(lambda _: guarded_call(env.client, "split", "requests",
                                                    lambda model: anthropic_message(model=SONNET)), range(3)))
    assert all(o.queued == 2 and not o.recorded and o.commit["status"] == "queued" for o in outs)
    assert env.client.drain(30)
    assert env.client.background_counts() == {"delivered": 6, "kept": 0, "rejected": 0}
    assert env.used("split", "requests") == "3" and env.used("split", "input_tokens") == str(3 * 50)
    assert len(env.events("split")) == 6 and set(env.holds("split")) == {"committed"}
    spool = env.client.spool
    env.client.close()
    assert spool.pending() == [] and list(spool.directory.glob("journal-*")) == []


def test_unreachable_commits_go_to_the_spool_and_are_flushed_once(any_engine, tmp_path):
    env, transport = _env(any_engine, tmp_path, {"/v1/quota/commit": ["connect"] * 1000})
    out = guarded_call(env.client, "split", "requests", lambda model: anthropic_message(model=SONNET))
    assert out.queued == 2 and env.client.drain(30)
    assert env.client.background_counts()["kept"] == 2 and env.events("split") == []
    assert len(env.client.spool.pending()) == 2
    transport.faults.clear()
    assert env.client.flush_spool() == {"delivered": 2, "rejected": 0, "pending": 0, "errors": []}
    assert env.used("split", "requests") == "1" and len(env.events("split")) == 2
    env.client.close()


def test_a_refused_commit_is_kept_apart(sqlite_engine, tmp_path, monkeypatch):
    env, _ = _env(sqlite_engine, tmp_path)
    enqueue = env.client.enqueue_commits

    def tampered(entries):  # a commit the service cannot take
        entries[0]["event"]["properties"]["input_tokens"] = -1
        return enqueue(entries)

    monkeypatch.setattr(env.client, "enqueue_commits", tampered)
    out = guarded_call(env.client, "bot", "messages", lambda model: anthropic_message(model=SONNET))
    assert out.queued and env.client.drain(30)
    assert env.client.background_counts()["rejected"] == 1
    (kept,) = env.client.spool.rejected()
    assert json.loads(kept.read_text())["error"]["code"] == "negative_quantity"
    assert env.client.spool.pending() == []
    env.client.close()


def test_a_dead_journal_becomes_spool_files_skipping_acked_and_torn_lines(tmp_path):
    spool = Spool(tmp_path / "s")
    journal = Journal(spool.directory)
    entries = [commit_entry(f"rsv_{i}", {"id": f"rsv_{i}", "customer": "c"}, f"key-{i}") for i in range(3)]
    f, _ = journal.append(entries[:2])
    journal.append(entries[2:])
    journal.ack(f, "key-1")
    assert recover(spool) == 0  # its writer (this journal's lock) is alive
    journal.sync()
    os.write(f.fd, b'{"add": {"idempot')  # a crash mid-write
    journal.close()  # as a process that died: the lock is gone
    paths = spool.pending()
    assert sorted(json.loads(p.read_text())["idempotency_key"] for p in paths) == ["key-0", "key-2"]
    assert list(spool.directory.glob("journal-*")) == []
    assert spool.pending() == paths  # recovered once


@pytest.mark.slow
def test_kill_9_right_after_the_call_returned_loses_nothing(any_engine, tmp_path):
    subscribe_all(any_engine)
    app = create_app(any_engine, CAT, context_ttl=0)  # the real clock, as the child's
    _, key = create_key(any_engine, "admin")
    spool_dir = tmp_path / "spool"
    with serve_app(app) as base:
        child = subprocess.run([sys.executable, str(CHILD), base, key, str(spool_dir), "background", "split",
                                "requests"], env=child_env(), capture_output=True, text=True, timeout=120)
        assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
        spool = Spool(spool_dir)
        assert len(list(spool_dir.glob("journal-*.jsonl"))) == 1
        client = HttpClient(base, key, spool_dir=spool_dir, retry=FAST)
        env = Env(client, any_engine, None, "http")
        assert env.events("split") == []  # the commits were never answered
        assert client.flush_spool() == {"delivered": 2, "rejected": 0, "pending": 0, "errors": []}
        assert env.used("split", "requests") == "1" and env.used("split", "input_tokens") == "50"
        assert len(env.events("split")) == 2 and env.holds("split") == ["committed", "committed"]
        assert spool.pending() == [] and spool.rejected() == [] and list(spool_dir.glob("journal-*")) == []
