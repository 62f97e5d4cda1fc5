"""Invoices show their dates in the customer's time zone: a Paris customer's October is
`2026-10-01 .. 2026-11-01`, not the UTC `2026-09-30 .. 2026-10-31` (issue 16, item 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

from billing.rating.periods import local_dates
from billing.store.db import upgrade
from tests.support.db import PLANS_DIR
from tests.support.ledger import _cli_env


def test_local_dates_reads_the_instants_in_the_zone():
    start, end = datetime(2026, 9, 30, 22, tzinfo=UTC), datetime(2026, 10, 31, 23, tzinfo=UTC)
    assert local_dates(start, end, "Europe/Paris") == "2026-10-01 .. 2026-11-01"
    assert local_dates(start, end, "UTC") == "2026-09-30 .. 2026-10-31"
    assert local_dates(start, end, "Not/AZone") == "2026-09-30 .. 2026-10-31"  # an unknown zone reads as UTC


def _billing(env: dict, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "billing", *args], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_paris_customers_invoice_shows_paris_dates(tmp_path):
    url = f"sqlite:///{tmp_path / 'billing.db'}"
    upgrade(url)
    env = _cli_env(url)
    _billing(env, "customers", "create", "acme", "--timezone", "Europe/Paris")
    _billing(env, "subscriptions", "create", "acme", "token-api", "--at", "2026-10-01T00:00:00+02:00")
    events = tmp_path / "e.jsonl"
    events.write_text(json.dumps({"id": "e1", "customer": "acme", "type": "llm.call",
                                  "timestamp": "2026-10-15T12:00:00Z",
                                  "properties": {"model": "claude-sonnet-4-5", "input_tokens": 1000,
                                                 "output_tokens": 10}}) + "\n")
    _billing(env, "events", "import", str(events))
    _billing(env, "invoice", "close", "--as-of", "2026-11-01T00:00:00+01:00")
    shown = _billing(env, "invoice", "show", "1")
    listed = _billing(env, "invoice", "list")
    preview = _billing(env, "invoice", "preview", "--plan", str(PLANS_DIR / "token-api.yaml"), "--events", str(events),
                       "--period", "2026-10", "--timezone", "Europe/Paris")
    for text in (shown, listed, preview):
        text = " ".join(text.split())  # (a table title wraps on a narrow terminal)
        assert "2026-10-01 .. 2026-11-01" in text and "2026-09-30" not in text, text
    doc = json.loads(_billing(env, "invoice", "show", "1", "--json"))  # the JSON keeps the exact UTC instants
    assert doc["period"] == {"start": "2026-09-30T22:00:00Z", "end": "2026-10-31T23:00:00Z"}
