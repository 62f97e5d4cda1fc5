"""`billing webhooks ...`: create / list / update / disable / delete, the delivery log and
replay, end to end over loopback HTTP with `billing worker --jobs outbox` (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from billing.alerts.events import enqueue_event
from billing.alerts.signing import verify
from billing.cli import app
from billing.config import get_settings
from billing.store.db import engine_for
from tests.support.db import PLANS_DIR
from tests.support.quota import NOW
from tests.support.webhooks import Receiver


@pytest.fixture
def cli(db_url, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(PLANS_DIR))
    monkeypatch.delenv("BILLING_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("BILLING_WEBHOOK_SECRET", raising=False)
    get_settings.cache_clear()
    engine_for.cache_clear()
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        out = runner.invoke(app, list(args), terminal_width=200)
        assert out.exit_code == code, (args, out.output, out.exception)
        return json.loads(out.output) if "--json" in args and code == 0 else out.output

    invoke.url = db_url
    return invoke


def test_webhooks_commands_end_to_end(cli):
    assert "must be http or https" in " ".join(cli("webhooks", "create", "ftp://x.example/y", code=2).split())
    assert "unknown type 'nope'" in " ".join(cli("webhooks", "create", "https://x.example", "--event-type", "nope",
                                                 code=2).split())
    with Receiver([502]) as rx:
        ep = cli("webhooks", "create", rx.url(), "--event-type", "invoice.*", "--json")
        other = cli("webhooks", "create", rx.url("/other"), "--json")
        assert [e["id"] for e in cli("webhooks", "list", "--json")] == sorted([ep["id"], other["id"]])
        assert cli("webhooks", "disable", other["id"], "--json")["status"] == "disabled"
        assert cli("webhooks", "update", ep["id"], "--description", "finance", "--json")["description"] == "finance"
        assert cli("webhooks", "show", ep["id"], "--secret", "--json")["secret"] == ep["secret"]
        with engine_for(cli.url).begin() as conn:
            enqueue_event(conn, "invoice.finalized", "inv_1", "acme", {"invoice": {"id": "inv_1"}}, NOW)
        out = cli("worker", "--once", "--jobs", "outbox")
        assert '"retried": 1' in out  # 502 once
        (d,) = cli("webhooks", "deliveries", "--status", "pending", "--json")
        assert (d["event_id"], d["last_status_code"], d["endpoint"]) == ("invoice.finalized:inv_1", 502, ep["id"])
        assert cli("webhooks", "replay", "--event", "invoice.finalized:inv_1", "--json") == {"replayed": 1}
        out = cli("worker", "--once", "--jobs", "outbox")
        assert '"delivered": 1' in out
        cli("webhooks", "replay", code=2)
        cli("webhooks", "replay", "--event", "x", "--endpoint", "we_nope", code=2)
        cli("webhooks", "delete", other["id"])
        cli("webhooks", "delete", other["id"], code=2)
    (headers, body), (headers2, body2) = rx.at("/hooks")
    assert headers["webhook-id"] == headers2["webhook-id"] == "invoice.finalized:inv_1"
    assert verify(ep["secret"], body2, headers2) and rx.at("/other") == []
    (d,) = cli("webhooks", "deliveries", "--json")
    assert d["status"] == "delivered" and [a["status_code"] for a in d["log"]] == [502, 200]
