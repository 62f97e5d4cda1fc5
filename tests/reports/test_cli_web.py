"""`billing report margins|forecast` and the /reports/margins page over a seeded ledger."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from billing.cli import report as report_cli
from billing.api import reports as web
from tests.support.margins import _invoiced, _snapshot, seed_ledger

D = Decimal
ROOT = Path(__file__).resolve().parents[2]
AS_OF = "2026-11-11T00:00:00Z"


@pytest.fixture(scope="module")
def seeded(module_engine, module_db_url):  # noqa: F811
    return {**seed_ledger(module_engine), "engine": module_engine, "url": module_db_url}


@pytest.fixture
def cli(seeded, monkeypatch):
    from billing.cli import context
    from billing.config import get_settings

    monkeypatch.setenv("BILLING_DATABASE_URL", seeded["url"])
    monkeypatch.setenv("BILLING_PLANS_DIR", str(ROOT / "plans"))
    get_settings.cache_clear()
    context.catalog.cache_clear()
    app = typer.Typer()
    app.add_typer(report_cli.app, name="report")
    app.command("noop")(lambda: None)
    yield lambda *args: CliRunner().invoke(app, ["report", *args])
    get_settings.cache_clear()
    context.catalog.cache_clear()


def test_report_margins_outputs(cli, seeded, tmp_path):
    before = _snapshot(seeded["engine"])
    result = cli("margins", "--period", "2026-10", "--as-of", AS_OF, "--json", "--by", "feature")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    invoiced = _invoiced(seeded["engine"])
    assert D(data["totals"]["revenue"]) == sum(invoiced.values())
    assert {r["key"] for r in data["breakdown"]} >= {"support-chat", "search", "coding", "agent"}
    assert data["whales"][0] == "free"

    # the figures add up: customers sum to the totals, invoiced customers match their invoices
    assert sum(D(c["revenue"]) for c in data["customers"]) == D(data["totals"]["revenue"])
    assert sum(D(c["cost"]) for c in data["customers"]) == D(data["totals"]["cost"])
    assert all(D(c["revenue"]) == invoiced[c["customer"]] for c in data["customers"] if c["source"] == "invoiced")
    assert sum(D(r["revenue"]) for r in data["breakdown"]) == D(data["totals"]["revenue"])
    assert sum(D(r["cost"]) for r in data["breakdown"]) == D(data["totals"]["cost"])
    assert [s["segment"] for s in data["segments"]] == ["light", "median", "heavy", "power"]
    assert data["segments"][0]["text"].startswith("light user (P25): 10 interactions")

    # two-way: --by feature --by model (pairs of values; tokens per row; sums hold)
    result = cli("margins", "--period", "2026-10", "--as-of", AS_OF, "--json", "--by", "feature", "--by", "model")
    assert result.exit_code == 0, result.output
    two = json.loads(result.output)
    assert two["by"] == "feature, model" and "support-chat / claude-sonnet-4-5" in {r["key"] for r in two["breakdown"]}
    assert sum(D(r["revenue"]) for r in two["breakdown"]) == D(two["totals"]["revenue"])
    assert sum(D(r["tokens"]["input"]) for r in two["breakdown"]) == D(two["totals"]["tokens"]["input"]) > 0

    result = cli("margins", "--period", "2026-10", "--as-of", AS_OF, "--csv", "--by", "model")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    customers = [r for r in rows if r["section"] == "customer"]
    assert {r["customer"] for r in customers} == {"chat", "api", "team", "free", "heavy"}
    by_model = [r for r in rows if r["section"] == "by:model"]
    per_customer = [r for r in rows if r["section"] == "customer-by:model"]
    for column in ("revenue", "cost"):
        total = sum(D(r[column]) for r in customers)
        assert sum(D(r[column]) for r in by_model) == total == sum(D(r[column]) for r in per_customer)
    for r in customers:  # each customer's allocated revenue adds up to its revenue, in whole cents
        mine = [D(x["revenue"]) for x in per_customer if x["customer"] == r["customer"]]
        assert sum(mine) == D(r["revenue"]) and all(v == v.quantize(D("0.01")) for v in mine)

    page = tmp_path / "margins.html"
    result = cli("margins", "--period", "2026-10", "--as-of", AS_OF, "--by", "user", "--whale-margin", "60",
                 "--html", str(page))
    assert result.exit_code == 0, result.output
    assert "Margins 2026-10" in result.output and "Whales" in result.output and "By user" in result.output
    html = page.read_text()
    # 4 charts + the daily revenue/cost chart + the --by breakdown
    assert html.count('<svg class="chart"') == 6 and 'data-chart="daily"' in html and "<script" not in html
    assert set(re.findall(r'data-chart="([a-z]+)"', html)) == {"histogram", "scatter", "segments", "plans", "breakdown",
                                                           "daily"}
    assert _snapshot(seeded["engine"]) == before

    assert cli("margins", "--period", "2026-10", "--by", "bad prop!", "--as-of", AS_OF).exit_code == 2
    assert cli("margins", "--period", "20261", "--as-of", AS_OF).exit_code == 2
    assert cli("margins", "--period", "2026-10", "--whale-margin", "nan", "--as-of", AS_OF).exit_code == 2
    assert cli("margins", "--period", "2026-10", "--json", "--csv", "--as-of", AS_OF).exit_code == 2


def test_report_forecast(cli):
    result = cli("forecast", "--as-of", AS_OF, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert "run rate" in data["method"]
    rows = {r["customer"]: r for r in data["customers"]}
    heavy = rows["heavy"]
    assert heavy["flags"] == ["charge:messages:included", "charge:messages:spend_cap"] and heavy["projected_invoice"] == "70.00"
    cap = next(x for x in heavy["crossings"] if x["subject"] == "charge:messages:spend_cap" and x["threshold_percent"] == "100")
    # 400 messages in 10 days: 40 a day; 100 included + $50 / $0.05 = 1,100 messages on day 27.5,
    # but the invoice bills the cap's 50.00 from 1,099.9 messages ($49.995 rounds to it): 3.6 minutes earlier
    assert cap["reached_now"] is False and cap["at"] == "2026-11-28T11:56:24Z"
    # chat: 60 messages in 10 days projects 180, past its 100 included on day 16 2/3
    assert rows["chat"]["flags"] == ["charge:messages:included"] and rows["chat"]["projected_margin_pct"] is not None
    included = next(x for x in rows["chat"]["crossings"] if x["subject"] == "charge:messages:included"
                    and x["threshold_percent"] == "100")
    assert included["at"] == "2026-11-17T16:00:00Z" and included["projected"] == "180"
    assert [x["threshold_percent"] for x in rows["chat"]["crossings"]] == ["50", "80", "100"]
    assert [x["reached_now"] for x in rows["chat"]["crossings"]] == [True, False, False]
    table = cli("forecast", "--as-of", AS_OF)
    assert table.exit_code == 0 and "Method: run rate" in table.output and "~Nov 28" in table.output
    flagged = cli("forecast", "--as-of", AS_OF, "--flagged")
    assert flagged.exit_code == 0 and "heavy" in flagged.output and "api " not in flagged.output


def _bare_app(seeded) -> FastAPI:
    from billing.api.errors import install

    app = FastAPI()
    install(app)  # the API's error answers (BillingError -> 4xx), as create_app does
    app.include_router(web.router)
    app.dependency_overrides[web.get_engine] = lambda: seeded["engine"]
    app.dependency_overrides[web.get_catalog] = lambda: seeded["catalog"]
    return app


def test_margins_page_router(seeded):
    app = _bare_app(seeded)
    client = TestClient(app)
    assert client.get("/reports/margins").status_code == 401  # no key store: closed by default
    app.dependency_overrides[web.authorize] = lambda: None
    page = client.get("/reports/margins", params={"period": "2026-10", "as_of": AS_OF, "by": "feature"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count('<svg class="chart"') == 5 and "support-chat" in page.text
    data = client.get("/reports/margins", params={"period": "2026-10", "as_of": AS_OF, "format": "json"}).json()
    assert D(data["totals"]["revenue"]) == sum(_invoiced(seeded["engine"]).values())
    assert client.get("/reports/margins", params={"period": "10-2026"}).status_code == 422
    assert client.get("/reports/margins", params={"by": "x;drop"}).status_code == 422
    for bad in ("nan", "inf", "ten"):  # a threshold that cannot compare is a 422, never a 500
        assert client.get("/reports/margins", params={"whale_margin": bad}).status_code == 422
    assert client.get("/reports/margins", params={"as_of": "2026-10-10T00:00:00"}).status_code == 422
    assert client.get("/reports/margins", params={"period": "2026-13"}).status_code == 422


def test_margins_page_in_the_api_app_needs_a_read_key(seeded):
    from sqlalchemy import inspect

    from billing.api.app import create_app
    from billing.api.auth import create_key

    if not inspect(seeded["engine"]).has_table("api_key"):
        pytest.skip("the api_key table is not in the migrations yet")
    app = create_app(seeded["engine"], seeded["catalog"])  # serves the page on its own engine
    client = TestClient(app)
    # 401, not 404: create_app mounted the page, and it wants a key
    assert client.get("/reports/margins", params={"period": "2026-10"}).status_code == 401
    _, key = create_key(seeded["engine"], "read", name="reports")
    page = client.get("/reports/margins", params={"period": "2026-10", "as_of": AS_OF},
                      headers={"Authorization": f"Bearer {key}"})
    assert page.status_code == 200, page.text
    assert "<svg" in page.text
    _, scoped_key = create_key(seeded["engine"], "read", customer="chat", name="one customer")
    denied = client.get("/reports/margins", params={"period": "2026-10"},
                        headers={"Authorization": f"Bearer {scoped_key}"})
    assert denied.status_code == 403


def test_margins_read_sqlite_through_its_page_cache_and_print_the_same_json(cli, seeded, capsys):
    """The margin report's engine maps no file and sorts in temporary files (SQLite): its
    memory stays bounded by the page cache; its JSON (orjson) is the document Python's
    encoder writes."""
    from billing.cli.context import report_engine
    from billing.cli.render import print_json

    with report_engine().connect() as conn:
        if conn.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA mmap_size").scalar() == 0
            assert conn.exec_driver_sql("PRAGMA temp_store").scalar() == 1  # FILE
    result = cli("margins", "--period", "2026-10", "--as-of", AS_OF, "--json", "--by", "feature")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    print_json(data)
    assert capsys.readouterr().out == result.output
    print_json({"customer": "café", "n": 2**70, "d": D("1.5")}, fast=True)  # past 64 bits: Python's encoder
    assert json.loads(capsys.readouterr().out) == {"customer": "café", "n": 2**70, "d": "1.5"}
