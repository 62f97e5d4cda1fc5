"""The ledger's `billing` commands end to end (SQLite and PostgreSQL): db upgrade / recount,
customers, subscriptions (seats, plan change mid-period, cancel), credits, events import,
invoice close / list / show / pay / void; and `billing demo` on a fresh SQLite file."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from billing.cli import app
from billing.config import get_settings
from billing.store.db import engine_for
from tests.support.db import PLANS_DIR, counter_rows, engine_for_url


@pytest.fixture
def cli(db_url, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(PLANS_DIR))
    get_settings.cache_clear()
    engine_for.cache_clear()
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        out = runner.invoke(app, list(args))
        assert out.exit_code == code, (args, out.output, out.exception)
        return json.loads(out.output) if "--json" in args and code in (0, 1) else out.output

    yield invoke
    engine_for(db_url).dispose()
    get_settings.cache_clear()
    engine_for.cache_clear()


def _event(i: int, day: int, **props) -> dict:
    return {"id": f"e{i}", "customer": "acme", "type": "llm.call", "timestamp": f"2026-10-{day:02d}T12:00:00Z",
            "properties": {"model": "claude-sonnet-4-5", "input_tokens": 2100, "output_tokens": 400,
                           "feature": "support-chat", **props}}


@pytest.mark.slow
def test_ledger_commands_end_to_end(cli, db_url, tmp_path):
    assert "database at head" in cli("db", "upgrade")
    assert cli("customers", "create", "acme", "--timezone", "Europe/Paris", "--json")["timezone"] == "Europe/Paris"
    sub = cli("subscriptions", "create", "acme", "support-chatbot", "--at", "2026-10-01T00:00:00+02:00", "--seats", "3",
              "--json")
    assert (sub["plan_id"], sub["plan_version"]) == ("support-chatbot", 1)
    assert cli("subscriptions", "seats", "acme", "5", "--at", "2026-10-16T00:00:00Z", "--json")["seats"] == 5
    grant = cli("credits", "grant", "acme", "25.00", "--at", "2026-10-01T00:00:00Z", "--expires",
                "2027-01-01T00:00:00Z", "--id", "g1", "--json")
    assert grant["amount_micro"] == 25_000_000
    cli("credits", "grant", "acme", "NaN", code=2)
    cli("credits", "grant", "acme", "5", "--at", "2026-10-01T00:00:00Z", "--expires", "2026-09-01T00:00:00Z", code=2)

    events = [_event(i, 1 + i % 28) for i in range(30)]
    lines = [json.dumps(e) for e in events] + [json.dumps(events[0]),  # a duplicate
                                               json.dumps({**events[1], "properties": {}}),  # a conflict
                                               "{not json"]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    imported = cli("events", "import", str(path), "--json", code=1)  # 1: some events were not accepted
    assert (imported["accepted"], imported["duplicates"], imported["conflicts"], imported["rejected"]) == (30, 1, 1, 1)
    assert cli("events", "import", str(path), "--json", code=1)["accepted"] == 0  # re-importing counts nothing twice

    # a plan change in the past, after its events were stored: the counters follow it
    changed = cli("subscriptions", "change-plan", "acme", "team", "--at", "2026-10-20T00:00:00Z", "--json")
    assert changed["plan_id"] == "team"
    with engine_for_url(db_url) as engine:
        before = counter_rows(engine)
    assert cli("db", "recount", "--json")["counters"] == len(before)
    with engine_for_url(db_url) as engine:
        assert counter_rows(engine) == before

    closed = cli("invoice", "close", "--as-of", "2026-11-01T00:00:00Z", "--json")
    assert len(closed["invoices"]) == 2 and closed["credit_notes"] == []
    assert cli("invoice", "close", "--as-of", "2026-11-01T00:00:00Z", "--json")["invoices"] == []  # idempotent
    listed = cli("invoice", "list", "--json")
    assert [(d["number"], d["status"]) for d in listed] == [("INV-000001", "finalized"), ("INV-000002", "finalized")]
    first = cli("invoice", "show", str(listed[0]["id"]), "--json")
    assert first["plan"]["id"] == "support-chatbot" and first["lines"]
    assert Decimal(first["total"]) == sum(Decimal(ln["amount"]) for ln in first["lines"])
    assert "INV-000001" in cli("invoice", "show", str(listed[0]["id"]))

    assert cli("invoice", "pay", str(listed[0]["id"]), "--at", "2026-11-05T00:00:00Z", "--json")["status"] == "paid"
    cli("invoice", "void", str(listed[0]["id"]), code=2)  # a paid invoice cannot be voided
    assert cli("invoice", "void", str(listed[1]["id"]), "--json")["status"] == "void"
    cli("invoice", "pay", "999", code=2)

    cancelled = cli("subscriptions", "cancel", "acme", "--at", "2026-11-10T00:00:00Z", "--json")
    assert cancelled["ended_at"].startswith("2026-11-10")
    closed = cli("invoice", "close", "--as-of", "2026-12-01T00:00:00Z", "--json")
    assert len(closed["invoices"]) == 1
    last = cli("invoice", "show", str(closed["invoices"][0]), "--json")
    assert (last["period"]["start"], last["period"]["end"]) == ("2026-10-31T23:00:00Z", "2026-11-10T00:00:00Z")


@pytest.mark.slow
def test_demo_runs_the_whole_loop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(app, ["demo", "--plans", str(PLANS_DIR), "--db", str(tmp_path / "demo.db")])
    assert out.exit_code == 0, out.output
    assert "invoices finalized" in out.output and "INV-000001" in out.output
    assert "Gross margin" in out.output and "All" in out.output
    assert (tmp_path / "demo.db").exists()
