"""The CLI checks what the API checks (SQLite and PostgreSQL): one validator per rule in
``billing.ledger.accounts`` (currencies against ISO 4217, seat counts, ids that fit their
columns, instants in the engine's window), so the same bad input is exit 2 with a clear
message and no traceback in the CLI, a 422 in the API, and no row in either case."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.cli import app
from billing.config import get_settings
from billing.store.db import engine_for
from tests.support.db import PLANS_DIR, engine_for_url, shipped_catalog

TABLES = ("customer", "subscription", "seat_change", "credit_grant", "invoice")


@pytest.fixture
def doors(db_url, monkeypatch):
    """(run the CLI -> (exit code, output), call the API -> response, row counts) on one database."""
    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(PLANS_DIR))
    get_settings.cache_clear()
    engine_for.cache_clear()
    runner = CliRunner()

    def cli(*args: str) -> tuple[int, str]:
        out = runner.invoke(app, list(args))
        assert "Traceback" not in out.output, out.output
        assert out.exception is None or isinstance(out.exception, SystemExit), repr(out.exception)
        return out.exit_code, out.output

    with engine_for_url(db_url) as engine:
        client = TestClient(create_app(engine, shipped_catalog(), context_ttl=0, key_cache_ttl=0))
        headers = {"Authorization": f"Bearer {create_key(engine, 'admin')[1]}"}

        def api(method: str, path: str, body=None):
            return client.request(method, path, json=body, headers=headers)

        def rows() -> dict[str, int]:
            with engine.connect() as conn:
                return {t: conn.exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar_one() for t in TABLES}

        assert cli("customers", "create", "acme")[0] == 0
        yield cli, api, rows
        engine_for(db_url).dispose()
    get_settings.cache_clear()
    engine_for.cache_clear()


SUB = "/v1/customers/acme/subscriptions"
CASES = [
    # (CLI arguments, API method, path, body, words the CLI's message must contain)
    (["customers", "create", "c1", "--currency", "DOLLARS"], "POST", "/v1/customers",
     {"id": "c1", "currency": "DOLLARS"}, ["ISO 4217", "DOLLARS"]),
    (["customers", "create", "c1", "--currency", "XYZ"], "POST", "/v1/customers",
     {"id": "c1", "currency": "XYZ"}, ["ISO 4217"]),
    (["customers", "create", "c" * 201], "POST", "/v1/customers", {"id": "c" * 201}, ["1-200 characters"]),
    (["customers", "create", "c1", "--name", "n" * 301], "POST", "/v1/customers",
     {"id": "c1", "name": "n" * 301}, ["at most 300"]),
    (["subscriptions", "create", "acme", "support-chatbot", "--seats", str(2**31), "--at", "2026-10-01T00:00:00Z"],
     "POST", SUB, {"plan": "support-chatbot", "seats": 2**31, "at": "2026-10-01T00:00:00Z"}, ["seats", "1,000,000"]),
    (["subscriptions", "create", "acme", "support-chatbot", "--seats", str(10**20)], "POST", SUB,
     {"plan": "support-chatbot", "seats": 10**20}, ["seats"]),
    (["subscriptions", "create", "acme", "support-chatbot", "--at", "0001-01-01T00:00:00+14:00"], "POST", SUB,
     {"plan": "support-chatbot", "at": "0001-01-01T00:00:00+14:00"}, ["2000-01-01"]),
    (["subscriptions", "create", "acme", "support-chatbot", "--at", "9999-12-31T23:59:59-14:00"], "POST", SUB,
     {"plan": "support-chatbot", "at": "9999-12-31T23:59:59-14:00"}, ["2100-01-01"]),
    (["subscriptions", "create", "acme", "support-chatbot", "--at", "1969-12-31T00:00:00Z"], "POST", SUB,
     {"plan": "support-chatbot", "at": "1969-12-31T00:00:00Z"}, ["2000-01-01"]),
    (["invoice", "show", str(10**20)], "GET", f"/v1/invoices/{10**20}", None, ["invoice id", "2,147,483,647"]),
    (["invoice", "show", "0"], "GET", "/v1/invoices/0", None, ["invoice id"]),
    (["invoice", "list", "--status", "bogus"], "GET", "/v1/invoices?status=bogus", None, ["draft, finalized"]),
]


@pytest.mark.parametrize("args, method, path, body, words", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_is_refused_the_same_way_by_the_cli_and_the_api(doors, args, method, path, body, words):
    cli, api, rows = doors
    before = rows()
    code, output = cli(*args)
    assert code == 2, output
    message = " ".join(output.split())
    assert all(w in message for w in words), message
    r = api(method, path, body)
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", r.text
    assert rows() == before


def test_commands_on_documents_refuse_ids_their_columns_cannot_hold(doors):
    cli, _api, rows = doors
    before = rows()
    for command in ("show", "pay", "void"):
        code, output = cli("invoice", command, str(10**20))
        assert code == 2 and "invoice id must be a whole number from 1 to 2,147,483,647" in " ".join(output.split())
    assert rows() == before


def test_seat_changes_and_credit_grants_are_bounded(doors):
    cli, api, rows = doors
    assert cli("subscriptions", "create", "acme", "support-chatbot", "--at", "2026-10-01T00:00:00Z")[0] == 0
    before = rows()
    for seats in (str(2**31), str(10**20)):
        code, output = cli("subscriptions", "seats", "acme", seats, "--at", "2026-10-02T00:00:00Z")
        assert code == 2 and "seats must be a whole number from 0 to 1,000,000" in output
        assert api("POST", "/v1/customers/acme/seats", {"seats": int(seats)}).status_code == 422
    for amount, words in (("1e999999", "at most 1,000,000,000,000"), ("100000000000000000", "at most"),
                          ("0.0000001", "6 decimal places"), ("0", "positive")):
        code, output = cli("credits", "grant", "acme", amount, "--at", "2026-10-01T00:00:00Z")
        assert code == 2 and words in " ".join(output.split()), output
    assert rows() == before


def test_good_input_still_passes_both_doors(doors):
    cli, api, rows = doors
    assert cli("customers", "create", "c2", "--currency", "eur")[0] == 0  # upper-cased, as the API does
    assert api("POST", "/v1/customers", {"id": "c3", "currency": "jpy"}).json()["currency"] == "JPY"
    assert api("POST", "/v1/customers", {"id": "c2", "currency": "EUR"}).status_code == 201  # the same customer
    assert rows()["customer"] == 3


def test_preview_and_stripe_sync_take_the_same_rules(doors, tmp_path):
    """`invoice preview` needs no database but checks seats and instants as the ledger's
    commands do; `stripe sync --invoice` checks ids before anything is read."""
    cli, _api, rows = doors
    plan = str(PLANS_DIR / "support-chatbot.yaml")
    events = tmp_path / "events.jsonl"
    events.write_text('{"id": "e1", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z", '
                      '"properties": {"model": "claude-sonnet-4-5", "input_tokens": 10, "feature": "support-chat"}}\n')
    base = ["invoice", "preview", "--plan", plan, "--events", str(events)]
    for extra, words in ((["--seats", str(10**20)], "--seats: seats must be a whole number from 0 to 1,000,000"),
                         (["--start", "0001-01-01T00:00:00+14:00", "--end", "2026-11-01T00:00:00Z"],
                          "--start: '0001-01-01T00:00:00+14:00' must be from 2000-01-01T00:00:00Z"),
                         (["--start", "2026-10-01T00:00:00Z", "--end", "9999-12-31T23:59:59-14:00"], "--end:")):
        code, output = cli(*base, *extra)
        assert code == 2 and words in " ".join(output.split()), output
    assert cli(*base, "--seats", "3", "--json")[0] == 0
    before = rows()
    code, output = cli("stripe", "sync", "--invoice", str(10**20), "--dry-run")
    assert code == 2 and "--invoice must be a whole number from 1 to 2,147,483,647" in " ".join(output.split())
    assert rows() == before
