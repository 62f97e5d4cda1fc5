"""The wrapper sends a call's ``retry`` / ``depth`` properties with its reservation, so
``agent_limits.max_retries`` / ``max_depth`` refuse the call before the model is called, and
records them on the call's event when it goes ahead (local and HTTP clients)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.catalog import Catalog, parse_plan_text
from billing.client import HttpClient, LocalClient, QuotaDenied, guarded_call
from billing.ledger.accounts import Accounts
from billing.reservations.holds import Quota
from tests.support.db import stored_events
from tests.support.quota import T0, Clock

PLAN = parse_plan_text("""
plan: agents
name: Agents
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: calls, event_type: llm.call}
agent_limits: {max_retries: 2, max_depth: 1}
""", "agents.yaml")
CAT = Catalog([PLAN])


@pytest.mark.parametrize("kind", ["local", "http"])
def test_retry_and_depth_go_with_the_reservation_and_the_event(sqlite_engine, tmp_path, kind):
    acc = Accounts(sqlite_engine, CAT)
    acc.create_customer("acme", now=T0)
    acc.subscribe("acme", "agents", at=T0)
    clock = Clock()
    if kind == "local":
        client = LocalClient(Quota(sqlite_engine, CAT, clock=clock))
    else:
        app = create_app(sqlite_engine, CAT, clock=clock, context_ttl=0)
        client = HttpClient("http://testserver", create_key(sqlite_engine, "admin")[1], clock=clock,
                            client=TestClient(app, base_url="http://testserver"), spool_dir=tmp_path / "spool")
    with pytest.raises(QuotaDenied) as denied:
        guarded_call(client, "acme", "calls", lambda m: pytest.fail("must not be called"),
                     properties={"retry": 3, "depth": 0})
    assert denied.value.decision["reason"] == "task_limit" and "retry 3 > 2" in denied.value.decision["message"]
    with pytest.raises(QuotaDenied):
        guarded_call(client, "acme", "calls", lambda m: pytest.fail("must not be called"), properties={"depth": 2})
    out = guarded_call(client, "acme", "calls", lambda m: {"model": m, "usage": {}},
                       properties={"retry": 2, "depth": 1})
    assert out.recorded
    [event] = stored_events(sqlite_engine, "acme")
    properties = event[4]
    assert properties["retry"] == 2 and properties["depth"] == 1
