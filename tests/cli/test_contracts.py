"""`billing contracts ...` end to end on SQLite and PostgreSQL: the README's worked example
(a contract price and fee, a coupon for three periods, a term commitment) computed through
the CLI and the close, and a bad override refused with every problem named."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from billing.cli import app
from billing.config import get_settings
from billing.store.db import engine_for
from tests.support.db import PLANS_DIR


@pytest.fixture
def cli(db_url, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(PLANS_DIR))
    get_settings.cache_clear()
    engine_for.cache_clear()
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        out = runner.invoke(app, list(args), terminal_width=200)
        assert out.exit_code == code, (args, out.output, out.exception)
        return json.loads(out.output) if "--json" in args and code == 0 else out.output

    yield invoke
    engine_for(db_url).dispose()
    get_settings.cache_clear()
    engine_for.cache_clear()


def test_worked_example_contract_invoice(cli, tmp_path):
    """README "Contracts on top of plans": October's invoice is $18.88."""
    cli("customers", "create", "acme")
    sub = cli("subscriptions", "create", "acme", "copilot-premium", "--at", "2026-10-01T00:00:00Z", "--json")["id"]
    s = str(sub)
    cli("contracts", "override", s, "charges/premium_requests/price/unit_price", "0.03",
        "--from", "2026-10-01T00:00:00Z")
    cli("contracts", "override", s, "fees/subscription/amount", "8.00", "--from", "2026-10-01T00:00:00Z",
        "--until", "2027-01-01T00:00:00Z")
    cli("contracts", "coupon-create", "WELCOME", "--percent", "25", "--duration", "repeating", "--periods", "3",
        "--applies-to", "usage")
    assert cli("contracts", "redeem", s, "WELCOME", "--at", "2026-10-01T00:00:00Z", "--json")["ends_at"] == \
        "2027-01-01T00:00:00Z"
    cli("contracts", "commit", s, "240", "--from", "2026-10-01T00:00:00Z", "--until", "2027-10-01T00:00:00Z")
    shown = cli("contracts", "show", s, "--json")
    assert [o["path"] for o in shown["overrides"]] == ["charges/premium_requests/price/unit_price",
                                                       "fees/subscription/amount"]
    events = tmp_path / "october.jsonl"
    events.write_text("".join(json.dumps({"id": f"r{i}", "customer": "acme", "type": "request",
                                          "timestamp": "2026-10-15T12:00:00Z", "properties": {"model": "o3"}}) + "\n"
                              for i in range(500)))
    cli("events", "import", str(events))
    closed = cli("invoice", "close", "--as-of", "2026-11-01T00:00:00Z", "--json")
    (invoice_id,) = closed["invoices"]
    invoice = cli("invoice", "show", str(invoice_id), "--json")
    assert [(ln["kind"], ln["description"], ln["amount"]) for ln in invoice["lines"]] == [
        ("fee", "Monthly subscription (contract)", "8.00"),
        ("usage", "Premium requests (contract): 500 used, 300 included", "0.00"),
        ("usage", "Premium requests (contract)", "6.00"),  # 200 past the 300 included at the contract's $0.03
        ("discount", "Coupon WELCOME (25% off usage)", "-1.50"),
        ("commitment", "Contract commitment true-up", "6.38"),  # 240 x 31/365 = 20.38, less the 14.00 charged
    ]
    assert invoice["total"] == "18.88"


def test_a_bad_override_names_every_problem(cli):
    cli("customers", "create", "bad")
    sub = str(cli("subscriptions", "create", "bad", "copilot-premium", "--at", "2026-10-01T00:00:00Z", "--json")["id"])
    out = cli("contracts", "override", sub, "charges/premium/price/unit_price", "1", "--from", "2026-10-01T00:00:00Z",
              code=2)
    assert "contract_invalid" in out and "has no charge 'premium'" in out
    out = cli("contracts", "coupon-create", "P", "--percent", "120", "--duration", "once", code=2)
    assert "percent: must be more than 0 and at most 100, got 120" in out


def test_addon_commands(cli, tmp_path, monkeypatch):
    from billing.cli.context import catalog

    plans = tmp_path / "plans"
    plans.mkdir()
    for path in PLANS_DIR.glob("*.yaml"):
        (plans / path.name).write_text(path.read_text())
    (plans / "sso.yaml").write_text('plan: sso\nname: SSO add-on\neffective_from: 2026-01-01T00:00:00Z\n'
                                    'fees:\n  - {type: flat, key: sso, amount: "31.00"}\n')
    monkeypatch.setenv("BILLING_PLANS_DIR", str(plans))
    get_settings.cache_clear()
    catalog.cache_clear()
    cli("customers", "create", "acme")
    sub = str(cli("subscriptions", "create", "acme", "copilot-premium", "--at", "2026-10-01T00:00:00Z", "--json")["id"])
    addon = cli("contracts", "addon", sub, "sso", "--at", "2026-10-22T00:00:00Z", "--json")
    assert addon["plan"] == {"id": "sso", "version": 1} and addon["ended_at"] is None
    assert "ends 2026-11-11" in cli("contracts", "addon-end", str(addon["id"]), "--at", "2026-11-11T00:00:00Z")
    assert "add-on" in cli("contracts", "show", sub)
    (october, november) = cli("invoice", "close", "--as-of", "2026-12-01T00:00:00Z", "--json")["invoices"]
    amounts = [[ln["amount"] for ln in cli("invoice", "show", str(i), "--json")["lines"] if ln["kind"] == "fee"]
               for i in (october, november)]
    assert amounts == [["10.00", "10.00"], ["10.00", "10.33"]]  # 31 x 10/31; 31 x 10/30
