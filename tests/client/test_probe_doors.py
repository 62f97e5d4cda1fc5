"""The same event through the Python client's two doors: ``BILLING_FUTURE_TOLERANCE_SECONDS``
(how far ahead of the clock an event may be dated) was read by the HTTP API, the import, the
ingest worker and the worker, but not by ``LocalClient`` (its ``Quota`` built its ledger with
the 300 s default): an event 30 minutes ahead was accepted over HTTP and rejected
``timestamp_in_future`` in-process. The ledger now reads the setting itself when not given one."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billing.config import get_settings
from tests.support.client import make_env


@pytest.fixture
def tolerance_hour(monkeypatch):
    monkeypatch.setenv("BILLING_FUTURE_TOLERANCE_SECONDS", "3600")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.parametrize("kind", ["local", "http"])
def test_an_event_within_the_configured_tolerance_is_accepted_by_every_client(kind, tolerance_hour, sqlite_engine,
                                                                               tmp_path):
    env = make_env(kind, sqlite_engine, tmp_path)
    ahead = env.clock() + timedelta(minutes=30)
    beyond = env.clock() + timedelta(hours=2)
    out = env.client.record([
        {"id": "ahead", "customer": "tok", "type": "llm.call", "timestamp": ahead.isoformat(),
         "properties": {"model": "claude-sonnet-4-5", "input_tokens": 10, "output_tokens": 1}},
        {"id": "beyond", "customer": "tok", "type": "llm.call", "timestamp": beyond.isoformat(),
         "properties": {"model": "claude-sonnet-4-5", "input_tokens": 10, "output_tokens": 1}}])
    assert [(r["status"], r.get("code")) for r in out["results"]] == [("accepted", None),
                                                                      ("rejected", "timestamp_in_future")]
