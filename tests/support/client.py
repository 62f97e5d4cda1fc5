"""The client tests' world (tests/client/; its fixtures are in tests/client/conftest.py):
a catalog with a plan that counts requests apart from tokens, customers on it, and clients
in-process or over HTTP on SQLite or PostgreSQL, with a fixed clock."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.catalog import Catalog, parse_plan_text
from billing.client import HttpClient, LocalClient
from billing.ledger.accounts import Accounts
from billing.reservations.holds import Quota
from tests.support.quota import PLANS, T0, Clock

SPLIT_PLAN = """
plan: split
name: Requests counted apart from tokens
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: requests, event_type: request, aggregation: count}
  - {key: input_tokens, event_type: llm.call, aggregation: sum, property: input_tokens}
  - {key: output_tokens, event_type: llm.call, aggregation: sum, property: output_tokens}
  - {key: searches, event_type: llm.call, aggregation: sum, property: web_search_requests}
charges:
  - key: requests
    meter: requests
    included: {pooled: 3}
    on_exhaustion: {policy: block}
  - key: output_tokens
    meter: output_tokens
    price: {model: per_unit, unit_price: "0.00001"}
agent_limits: {max_steps: 10, max_tokens: 1000000}
"""


def client_catalog() -> Catalog:
    return Catalog([*Catalog.from_paths(PLANS).all(), parse_plan_text(SPLIT_PLAN, "split.yaml")])


CAT = client_catalog()
CUSTOMERS = {"acme": "cursor-pro", "bot": "support-chatbot", "split": "split", "tok": "token-api"}


@dataclass
class Env:
    client: Any
    engine: Any
    clock: Clock
    kind: str
    app: Any = None
    key: str | None = None

    def events(self, customer: str) -> list[dict[str, Any]]:
        """The customer's stored events: type, properties, cost in picodollars."""
        import json

        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT event_id, type, properties, cost_pico FROM usage_event "
                                     "WHERE customer_id = :c ORDER BY event_id"), {"c": customer}).all()
        return [{"id": r[0], "type": r[1], "properties": r[2] if isinstance(r[2], dict) else json.loads(r[2]),
                 "cost_pico": r[3]} for r in rows]

    def holds(self, customer: str) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(text("SELECT status FROM quota_hold WHERE customer_id = :c "
                                                    "ORDER BY id"), {"c": customer})]

    def used(self, customer: str, meter: str) -> str:
        return self.client.usage(customer)["meters"][meter]["used"]


def subscribe_all(engine) -> None:
    acc = Accounts(engine, CAT)
    for customer, plan in CUSTOMERS.items():
        acc.create_customer(customer, now=T0)
        acc.subscribe(customer, plan, at=T0)


def make_env(kind: str, engine, tmp_path, **http_kwargs) -> Env:
    subscribe_all(engine)
    clock = Clock()
    if kind == "local":
        return Env(LocalClient(Quota(engine, CAT, clock=clock)), engine, clock, kind)
    app = create_app(engine, CAT, clock=clock, context_ttl=0)
    _, key = create_key(engine, "admin")
    http_kwargs.setdefault("spool_dir", tmp_path / "spool")
    client = HttpClient("http://testserver", key, client=TestClient(app, base_url="http://testserver"),
                        clock=clock, **http_kwargs)
    return Env(client, engine, clock, kind, app, key)


ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def serve_app(app) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port in a thread; yields its base URL."""
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def child_env() -> dict[str, str]:
    """The environment of a child process that imports this worktree's ``billing``."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
