"""Under ``--json`` a failing command prints the API's error body on stdout (and exits 2):
the same ``code``, ``type`` and ``param`` as the API answers for the same bad input, on
SQLite and PostgreSQL; without ``--json`` the one-line message on stderr is unchanged."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.cli import app
from billing.config import get_settings
from billing.store.db import engine_for
from tests.support.db import PLANS_DIR, engine_for_url, shipped_catalog
from tests.support.errors import error_of


@pytest.fixture
def doors(db_url, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(PLANS_DIR))
    get_settings.cache_clear()
    engine_for.cache_clear()
    runner = CliRunner()

    def cli(*args: str):
        return runner.invoke(app, list(args))

    with engine_for_url(db_url) as engine:
        client = TestClient(create_app(engine, shipped_catalog(), context_ttl=0, key_cache_ttl=0))
        headers = {"Authorization": f"Bearer {create_key(engine, 'admin')[1]}"}

        def api(method: str, path: str, body=None):
            return client.request(method, path, json=body, headers=headers)

        assert cli("customers", "create", "acme", "--currency", "EUR").exit_code == 0
        yield cli, api
        engine_for(db_url).dispose()
    get_settings.cache_clear()
    engine_for.cache_clear()


CASES = [
    (["customers", "create", "c1", "--currency", "DOLLARS"], "POST", "/v1/customers",
     {"id": "c1", "currency": "DOLLARS"}),
    (["customers", "create", "acme", "--currency", "USD"], "POST", "/v1/customers",
     {"id": "acme", "currency": "USD"}),  # exists with other details: customer_exists
    (["subscriptions", "create", "acme", "no-such-plan"], "POST", "/v1/customers/acme/subscriptions",
     {"plan": "no-such-plan"}),
    (["subscriptions", "create", "nobody", "support-chatbot"], "POST", "/v1/customers/nobody/subscriptions",
     {"plan": "support-chatbot"}),
]


@pytest.mark.parametrize("args, method, path, body", CASES)
def test_the_cli_prints_the_apis_error_under_json(doors, args, method, path, body):
    cli, api = doors
    out = cli(*args, "--json")
    assert out.exit_code == 2 and "Traceback" not in out.output, out.output
    printed = error_of(json.loads(out.stdout))
    answered = error_of(api(method, path, body).json())
    assert (printed["code"], printed["type"]) == (answered["code"], answered["type"]), (printed, answered)
    assert printed["message"] and printed["request_id"] is None
    plain = cli(*args)
    assert plain.exit_code == 2 and plain.stdout == "" and f"{printed['code']}: " in plain.stderr


def test_an_unmigrated_database_is_a_json_error_too(tmp_path, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    get_settings.cache_clear()
    engine_for.cache_clear()
    try:
        out = CliRunner().invoke(app, ["customers", "list", "--json"])
    finally:
        get_settings.cache_clear()
        engine_for.cache_clear()
    assert out.exit_code == 2, out.output
    error = error_of(json.loads(out.stdout))
    assert error["code"] == "service_unavailable" and "billing db upgrade" in error["message"]
