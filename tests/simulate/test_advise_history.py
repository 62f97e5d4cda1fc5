"""`billing advise --history`: the ledger's month as the population (read only); the
suggested plan, re-rated by `billing simulate --history`'s own code, reaches the target."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from billing.catalog import load_plan_file
from billing.costs import CostBook
from billing.simulate.history import simulate_history
from billing.simulate.price_lever import Lever, with_value
from tests.support.margins import _snapshot, seed_ledger

D = Decimal
CHATBOT = Path(__file__).resolve().parents[2] / "plans" / "support-chatbot.yaml"


@pytest.fixture(scope="module")
def seeded(module_engine, module_db_url):  # noqa: F811
    return {**seed_ledger(module_engine), "engine": module_engine, "url": module_db_url}


def advise_json(seeded, monkeypatch, *args: str) -> tuple[int, str]:
    from billing.cli.advise import advise
    from billing.config import get_settings

    monkeypatch.setenv("BILLING_DATABASE_URL", seeded["url"])
    get_settings.cache_clear()
    app = typer.Typer()
    app.command("advise")(advise)
    app.command("noop")(lambda: None)
    try:
        result = CliRunner().invoke(app, ["advise", "--history", "2026-10", "--plan", str(CHATBOT), *args])
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.output


def test_history_advice_re_rated_reaches_the_target_and_writes_nothing(seeded, monkeypatch):
    before = _snapshot(seeded["engine"])
    code, out = advise_json(seeded, monkeypatch, "--target-margin", "80", "--segment", "all", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["source"] == "history" and data["suggestion"]["customers"] == 5
    value = D(data["suggestion"]["target"]["value"])
    plan = load_plan_file(CHATBOT)
    for fee, reaches in ((value, True), (value - D("0.01"), False)):
        sim = simulate_history(seeded["engine"], "2026-10", [with_value(plan, Lever("fee", "base"), fee)],
                               CostBook.load_default())
        total = sim.total(plan.ref)
        assert (total.revenue * 20 >= total.cost * 100) is reaches, (fee, total)  # margin >= 80%
    assert _snapshot(seeded["engine"]) == before
    # a usage band named by its first word
    code, out = advise_json(seeded, monkeypatch, "--target-margin", "50", "--segment", "regular", "--json")
    assert code == 0, out
    assert json.loads(out)["suggestion"]["customers"] == 2
