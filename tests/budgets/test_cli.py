"""``billing budgets create|list|delete`` on SQLite and PostgreSQL: a budget created with
its warning, bad input exit 2 naming the field (nothing written), list and delete."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from billing.cli import app
from billing.config import get_settings
from billing.store.db import engine_for
from tests.support.db import PLANS_DIR


def test_budgets_through_the_cli(db_url, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(PLANS_DIR))
    get_settings.cache_clear()
    engine_for.cache_clear()
    try:
        runner = CliRunner()
        assert runner.invoke(app, ["customers", "create", "acme", "--timezone", "Europe/Paris"]).exit_code == 0
        assert runner.invoke(app, ["subscriptions", "create", "acme", "support-chatbot",
                                   "--at", "2026-10-01T00:00:00Z"]).exit_code == 0
        out = runner.invoke(app, ["budgets", "create", "acme", "research", "--measure", "units", "--meter", "messages",
                                  "--amount", "50", "--window", "daily", "--scope", "team=research", "--hard", "--json"])
        assert out.exit_code == 0, out.output
        made = json.loads(out.output)
        assert (made["policy"], made["scope"], made["warnings"][0]["code"]) == (
            "deny", {"property": "team", "value": "research"}, "property_not_seen")
        for bad, field in ((["--measure", "cost", "--amount", "5", "--timezone", "Mars/Base"], "timezone"),
                           (["--measure", "units", "--meter", "nope", "--amount", "5"], "meter"),
                           (["--measure", "cost", "--amount", "-1"], "amount")):
            out = runner.invoke(app, ["budgets", "create", "acme", "bad", *bad])
            assert out.exit_code == 2 and f"{field}:" in out.output and "Traceback" not in out.output
        listed = json.loads(runner.invoke(app, ["budgets", "list", "acme", "--json"]).output)["budgets"]
        assert [b["name"] for b in listed] == ["research"]  # nothing half-created
        assert runner.invoke(app, ["budgets", "delete", "acme", str(made["id"])]).exit_code == 0
        assert runner.invoke(app, ["budgets", "delete", "acme", str(made["id"])]).exit_code == 2
        assert json.loads(runner.invoke(app, ["budgets", "list", "acme", "--json"]).output)["budgets"] == []
    finally:
        get_settings.cache_clear()
        engine_for.cache_clear()
