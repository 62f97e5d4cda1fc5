"""`billing advise --history` over a month the ledger has nothing for (an empty database, a
month before the first customer): exit 2 naming the month and what to do, not "the
population has no customers" (the synthetic door's words), and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from billing.cli.advise import advise
from billing.config import get_settings

CHATBOT = Path(__file__).resolve().parents[2] / "plans" / "support-chatbot.yaml"


def test_advice_over_an_empty_month_names_the_month(db_url, monkeypatch, tmp_path):
    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    get_settings.cache_clear()
    app = typer.Typer()
    app.command("advise")(advise)
    app.command("noop")(lambda: None)
    html = tmp_path / "advice.html"
    try:
        result = CliRunner().invoke(app, ["advise", "--history", "2026-10", "--plan", str(CHATBOT),
                                          "--target-margin", "70", "--json", "--html", str(html)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    error = json.loads(result.output)["error"]
    assert error["code"] == "validation_error" and error["message"].startswith("--history 2026-10: the ledger has no")
    assert not html.exists()
