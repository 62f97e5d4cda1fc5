"""A customer's own cost guardrails (``Accounts.set_cost_guard``, ``billing customers
guard``): stored on the customer, they replace the plan's in quota decisions until cleared;
a bad guard is a validation error naming each field, and stores nothing."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from billing.cli import app
from billing.config import get_settings
from billing.errors import BillingError, ErrorCode
from billing.ledger.accounts import Accounts
from billing.reservations.holds import Quota
from billing.store.db import engine_for
from tests.support.db import PLANS_DIR, engine_for_url, shipped_catalog
from tests.support.quota import T0, Clock

OWN = {"cost_cap": {"amount": "2", "on_breach": {"policy": "downgrade", "model": "claude-haiku-4-5"}}}


def test_a_customers_guard_replaces_its_plans_until_cleared(db_url):
    catalog = shipped_catalog()
    with engine_for_url(db_url) as engine:
        acc = Accounts(engine, catalog)
        acc.create_customer("acme", now=T0)
        acc.subscribe("acme", "support-chatbot", at=T0)
        quota = Quota(engine, catalog, clock=Clock())
        assert quota.check("acme", "messages", cost="3").guard is None  # the plan has no cost guard
        acc.set_cost_guard("acme", OWN)
        d = quota.check("acme", "messages", cost="3")
        assert (d.outcome, d.guard, d.lane.model) == ("downgrade", "cost_cap", "claude-haiku-4-5")
        assert quota.check("acme", "messages", cost="2").outcome == "allow"
        with pytest.raises(BillingError) as bad:
            acc.set_cost_guard("acme", {"margin_floor": {"percent": 101, "on_breach": {"policy": "deny"}}})
        assert bad.value.code == ErrorCode.VALIDATION and "cost_guard.margin_floor.percent" in bad.value.message
        assert quota.check("acme", "messages", cost="3").guard == "cost_cap"  # the bad one stored nothing
        acc.set_cost_guard("acme", None)
        assert quota.check("acme", "messages", cost="3").guard is None
        quota.close()


def test_the_cli_sets_shows_and_clears_a_customers_guard(db_url, monkeypatch, tmp_path):
    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(PLANS_DIR))
    get_settings.cache_clear()
    engine_for.cache_clear()
    runner = CliRunner()
    assert runner.invoke(app, ["customers", "create", "acme"]).exit_code == 0
    path = tmp_path / "guard.yaml"
    path.write_text("cost_cap: {amount: 2, on_breach: {policy: deny}}\n")
    out = runner.invoke(app, ["customers", "guard", "acme", "--file", str(path), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["cost_guard"] == {"cost_cap": {"amount": "2", "on_breach": {"policy": "deny"}}}
    path.write_text("margin_floor: {percent: -5, on_breach: {policy: downgrade}}\n")
    out = runner.invoke(app, ["customers", "guard", "acme", "--file", str(path)])
    assert out.exit_code == 2 and "cost_guard.margin_floor.percent" in out.output and "Traceback" not in out.output
    out = runner.invoke(app, ["customers", "guard", "acme", "--clear", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["cost_guard"] is None
    assert runner.invoke(app, ["customers", "guard", "acme"]).exit_code == 2  # neither --file nor --clear
    get_settings.cache_clear()
    engine_for.cache_clear()
