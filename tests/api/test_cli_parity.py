"""The API and the CLI do the same thing (SQLite and PostgreSQL): the same operations, one
ledger written through ``billing ...`` and another through the HTTP routes, leave the same
customers, subscriptions, seats, credit grants, invoices and statuses, and print the same
documents (``invoice show|pay|void|close --json`` against the API's answers)."""

from __future__ import annotations

import json
from contextlib import ExitStack

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.cli import app as cli_app
from billing.config import get_settings
from billing.store.db import engine_for
from tests.support.db import BACKENDS, PLANS_DIR, engine_for_url, fresh_database, shipped_catalog

OPERATIONS = [
    # (CLI arguments, API method, path, body); {c} is the customer, {s} its subscription id
    (["customers", "create", "{c}", "--timezone", "Europe/Paris"], "POST", "/v1/customers",
     {"id": "{c}", "timezone": "Europe/Paris"}),
    (["subscriptions", "create", "{c}", "team", "--at", "2026-10-01T00:00:00+02:00", "--seats", "3"], "POST",
     "/v1/subscriptions", {"customer": "{c}", "plan": "team", "at": "2026-10-01T00:00:00+02:00", "seats": 3}),
    (["subscriptions", "seats", "{c}", "5", "--at", "2026-10-16T00:00:00Z"], "POST", "/v1/subscriptions/{s}/seats",
     {"seats": 5, "at": "2026-10-16T00:00:00Z"}),
    (["credits", "grant", "{c}", "25.50", "--id", "g-{c}", "--at", "2026-10-02T00:00:00Z", "--expires",
      "2027-01-01T00:00:00Z"], "POST", "/v1/credit_grants",
     {"customer": "{c}", "amount": "25.50", "id": "g-{c}", "at": "2026-10-02T00:00:00Z",
      "expires_at": "2027-01-01T00:00:00Z"}),
    (["subscriptions", "change-plan", "{c}", "support-chatbot", "--at", "2026-10-20T00:00:00Z"], "POST",
     "/v1/subscriptions/{s}/change_plan", {"plan": "support-chatbot", "at": "2026-10-20T00:00:00Z"}),
    (["subscriptions", "cancel", "{c}", "--at", "2026-12-10T00:00:00Z"], "POST", "/v1/subscriptions/{s}/cancel",
     {"at": "2026-12-10T00:00:00Z"}),
]
# what differs between two ledgers written at different moments: when rows were made
VOLATILE = {"created_at", "finalized_at", "next_cursor", "previous_cursor"}


def _fill(value, **names):
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, list):
        return [_fill(v, **names) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, **names) for k, v in value.items()}
    return value


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


@pytest.fixture(params=BACKENDS)
def doors(request, tmp_path, monkeypatch):
    """(cli(*args) -> JSON it printed, api(method, path, body) -> JSON, read(url, path) -> every row of a list)
    over two fresh ledgers: the CLI writes the first, the API the second."""
    with ExitStack() as stack:
        cli_url, api_url = (stack.enter_context(fresh_database(request.param, tmp_path)) for _ in range(2))
        monkeypatch.setenv("BILLING_DATABASE_URL", cli_url)
        monkeypatch.setenv("BILLING_PLANS_DIR", str(PLANS_DIR))
        get_settings.cache_clear()
        engine_for.cache_clear()
        runner = CliRunner()
        clients = {}
        for url in (cli_url, api_url):
            engine = stack.enter_context(engine_for_url(url))
            clients[url] = (TestClient(create_app(engine, shipped_catalog(), context_ttl=0, key_cache_ttl=0)),
                            {"Authorization": f"Bearer {create_key(engine, 'admin')[1]}"})

        def cli(*args: str):
            out = runner.invoke(cli_app, [*args, "--json"])
            assert out.exit_code == 0, out.output
            return json.loads(out.output)

        def call(url: str, method: str, path: str, body=None, **params):
            client, headers = clients[url]
            r = client.request(method, path, json=body, headers=headers, params=params or None)
            assert r.status_code in (200, 201), r.text
            return r.json()

        def read(url: str, path: str) -> list:
            rows, cursor = [], None
            while True:
                page = call(url, "GET", path, limit=2, **({"starting_after": cursor} if cursor else {}))
                rows += page["data"]
                if not page["has_more"]:
                    return rows
                cursor = page["next_cursor"]

        yield cli, (lambda *a, **k: call(api_url, *a, **k)), read, cli_url, api_url
        stack.callback(engine_for.cache_clear)
        stack.callback(lambda: engine_for(cli_url).dispose())
    get_settings.cache_clear()


def test_the_cli_and_the_api_leave_the_same_ledger(doors):
    cli, api, read, cli_url, api_url = doors
    for customer in ("acme", "globex"):
        sub = None
        for args, method, path, body in OPERATIONS:
            cli(*_fill(args, c=customer))
            answer = api(method, _fill(path, c=customer, s=sub), _fill(body, c=customer))
            if path in ("/v1/subscriptions", "/v1/subscriptions/{s}/change_plan"):
                sub = answer["id"]
    for path in ("/v1/customers", "/v1/subscriptions", "/v1/credit_grants"):
        assert _stable(read(cli_url, path)) == _stable(read(api_url, path)), path

    # a close, a payment and a void, each through its door, print the same documents
    closed = cli("invoice", "close", "--as-of", "2026-12-01T00:00:00Z")
    assert closed == api("POST", "/v1/invoices/close", {"as_of": "2026-12-01T00:00:00Z"})
    assert len(closed["invoices"]) == 6  # each customer: October's two plans, November
    first, second = closed["invoices"][:2]
    paid = cli("invoice", "pay", str(first), "--at", "2026-12-03T09:00:00Z")
    assert _stable({"object": "invoice", **paid}) == _stable(
        api("POST", f"/v1/invoices/{first}/pay", {"at": "2026-12-03T09:00:00Z"}))
    voided = cli("invoice", "void", str(second), "--at", "2026-12-03T09:00:00Z")
    assert _stable({"object": "invoice", **voided}) == _stable(
        api("POST", f"/v1/invoices/{second}/void", {"at": "2026-12-03T09:00:00Z"}))
    assert voided["status"] == "void" and paid["status"] == "paid" and paid["total"] != "0.00"
    shown = cli("invoice", "show", str(closed["invoices"][-1]))
    one = api("GET", f"/v1/invoices/{closed['invoices'][-1]}")
    one.pop("object", None)
    assert _stable(shown) == _stable(one) and shown["lines"]
    listed = cli("invoice", "list")
    assert [(d["id"], d["status"], d["total"]) for d in listed] == [
        (d["id"], d["status"], d["total"]) for d in read(api_url, "/v1/invoices")]
    assert _stable(read(cli_url, "/v1/invoices")) == _stable(read(api_url, "/v1/invoices"))
