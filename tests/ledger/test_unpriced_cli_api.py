"""Unpriced events through the doors users take: `BILLING_COSTS` honoured by the CLI import,
the API, reports and simulation; `billing costs add` / `import-litellm --add` / `recost`;
`billing events unpriced` and `GET /v1/events/unpriced`; the margin report's unpriced usage
(JSON, CSV, HTML); the check/reserve warning over HTTP; a re-cost killed mid-way."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from billing.cli import app
from billing.config import get_settings
from billing.costs import CostBook, ModelPrice, dump_yaml
from billing.store.db import engine_for
from tests.support.db import PLANS_DIR, counter_rows, engine_for_url

ROOT = Path(__file__).resolve().parents[2]
NOVA = ModelPrice(model="nova-9", provider="nova", effective_from=date(2026, 9, 1), input="2", output="10",
                  source="https://nova.example/pricing", retrieved=date(2026, 11, 20))
AS_OF = "2026-10-25T00:00:00Z"


def nova_file(directory: Path, name: str = "nova.yaml") -> Path:
    path = directory / name
    path.write_text(dump_yaml(CostBook([NOVA])), encoding="utf-8")
    return path


def nova_event(i: int, model: str = "nova-9", etype: str = "llm.call", customer: str = "acme") -> dict:
    return {"id": f"n{i}", "customer": customer, "type": etype, "timestamp": f"2026-10-{1 + i % 20:02d}T12:00:00Z",
            "properties": {"model": model, "input_tokens": 1_000_000, "output_tokens": 100_000, "feature": "chat"}}


@pytest.fixture
def cli(db_url, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(PLANS_DIR))
    monkeypatch.delenv("BILLING_COSTS", raising=False)
    get_settings.cache_clear()
    engine_for.cache_clear()
    runner = CliRunner()

    def invoke(*args: str, code: int = 0, env: dict | None = None):
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        get_settings.cache_clear()
        out = runner.invoke(app, [str(a) for a in args])
        for k in env or {}:
            monkeypatch.delenv(k)
        get_settings.cache_clear()
        assert out.exit_code == code, (args, out.output, out.exception)
        return json.loads(out.stdout) if "--json" in args and code == 0 else out.output

    invoke("db", "upgrade")
    invoke("customers", "create", "acme")
    invoke("subscriptions", "create", "acme", "token-api", "--at", "2026-10-01T00:00:00Z")
    yield invoke
    engine_for(db_url).dispose()
    get_settings.cache_clear()
    engine_for.cache_clear()


def stored(url: str) -> dict[str, tuple[int, str | None]]:
    with engine_for_url(url) as engine, engine.connect() as conn:
        return {e: (int(c), u) for e, c, u in conn.exec_driver_sql(
            "SELECT event_id, cost_pico, unpriced FROM usage_event").all()}


def write_events(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def test_billing_costs_is_honoured_by_the_import_and_costs_list(cli, db_url, tmp_path):
    costs_dir = tmp_path / "costs"
    costs_dir.mkdir()
    nova_file(costs_dir)
    with_costs = {"BILLING_COSTS": str(costs_dir)}
    listed = cli("costs", "list", "--json", "--at", "2026-10-05", env=with_costs)
    assert [r["input"] for r in listed if r["model"] == "nova-9"] == ["2"]
    assert not [r for r in cli("costs", "list", "--json") if r["model"] == "nova-9"]
    summary = cli("events", "import", write_events(tmp_path / "a.jsonl", [nova_event(1)]), "--json", env=with_costs)
    assert (summary["accepted"], summary["unpriced"]) == (1, 0)
    summary = cli("events", "import", write_events(tmp_path / "b.jsonl", [nova_event(2)]), "--json")
    assert (summary["accepted"], summary["unpriced"]) == (1, 1)  # without the file: kept unpriced, exit 0
    assert stored(db_url) == {"n1": (3 * 10**12, None), "n2": (0, stored(db_url)["n2"][1])}
    assert "nova-9" in stored(db_url)["n2"][1]
    # reports show what the book priced at ingestion, and keep the rest apart
    report = cli("report", "margins", "--period", "2026-10", "--as-of", AS_OF, "--json")
    assert report["customers"][0]["cost"] == "3" and report["unpriced_usage"]["events"] == 1
    # invoice preview prices with it too (a file-only command: no ledger needed)
    preview = ["invoice", "preview", "--plan", ROOT / "plans" / "token-api.yaml", "--events",
               write_events(tmp_path / "p.jsonl", [nova_event(5)]), "--json"]
    assert cli(*preview, env=with_costs)["provider_cost"] == "3"
    assert "unknown_model" in cli(*preview, code=2)
    # a BILLING_COSTS path that does not exist is an error, not a silent fallback
    out = cli("costs", "list", code=2, env={"BILLING_COSTS": str(tmp_path / "missing")})
    assert "no such file or directory" in out
    # the shipped book plus the directory, as `costs recost` sees it, prices n2
    assert cli("costs", "recost", "--json", env=with_costs)["events_recosted"] == 1
    assert stored(db_url)["n2"] == (3 * 10**12, None)
    report = cli("report", "margins", "--period", "2026-10", "--as-of", AS_OF, "--json")
    assert report["customers"][0]["cost"] == "6" and report["unpriced_usage"]["events"] == 0


def test_costs_add_stores_prices_and_recosts_once(cli, db_url, tmp_path):
    cli("events", "import", write_events(tmp_path / "e.jsonl", [nova_event(i) for i in range(5)]))
    listing = cli("events", "unpriced", "--json")
    assert [e["id"] for e in listing["events"]] == [f"n{i}" for i in range(5)]
    assert listing["totals"] == [{"status": "unpriced", "model": "nova-9", "customers": 1, "events": 5,
                                  "tokens": "5500000", "cost": "0"}]
    assert "nova-9" in cli("events", "unpriced")  # the table
    page = cli("events", "unpriced", "--json", "--limit", "2")
    assert len(page["events"]) == 2 and page["next_after"] is not None
    rest = cli("events", "unpriced", "--json", "--after", str(page["next_after"]))
    assert [e["id"] for e in rest["events"]] == ["n2", "n3", "n4"]

    path = nova_file(tmp_path)
    added = cli("costs", "add", path, "--json")
    assert (added["added"], added["events_recosted"], added["cost_added"]) == (["nova-9@2026-09-01"], 5, "15")
    again = cli("costs", "add", path, "--json")
    assert (again["added"], again["unchanged"], again["events_recosted"]) == ([], 1, 0)
    assert cli("events", "unpriced", "--json")["events"] == []
    assert all(u is None and c == 3 * 10**12 for c, u in stored(db_url).values())
    # every later command prices with it (stored in the ledger): costs list and a new import
    assert [r["input"] for r in cli("costs", "list", "--json") if r["model"] == "nova-9"] == ["2"]
    assert cli("events", "import", write_events(tmp_path / "f.jsonl", [nova_event(9)]), "--json")["unpriced"] == 0
    # a malformed file: a clear error, nothing stored
    bad = tmp_path / "bad.yaml"
    bad.write_text("provider: x\nmodels:\n  - {model: y, effective_from: 2026-01-01, input: cheap}\n")
    out = cli("costs", "add", bad, code=2)
    assert "input" in out and "bad.yaml" in out
    with engine_for_url(db_url) as engine, engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT model FROM cost_price").scalars().all() == ["nova-9"]


def test_litellm_import_can_add_to_the_ledger(cli, db_url, tmp_path):
    cli("events", "import", write_events(tmp_path / "e.jsonl", [nova_event(1, model="lite-1")]))
    price_map = tmp_path / "prices.json"
    price_map.write_text(json.dumps({"lite-1": {"litellm_provider": "lite", "mode": "chat",
                                                "input_cost_per_token": 1e-06, "output_cost_per_token": 4e-06}}))
    out = cli("costs", "import-litellm", price_map, "--effective-from", "2026-09-01", "--add", "--json")
    assert out["kept"] == 1 and out["ledger"]["events_recosted"] == 1 and out["ledger"]["cost_added"] == "1.4"
    assert stored(db_url)["n1"] == (int(1.4 * 10**12), None)


def test_margin_report_shows_unpriced_usage_apart(cli, db_url, tmp_path):
    events = [nova_event(1), nova_event(2), nova_event(3, model="claude-sonnet-4-5"),
              nova_event(4, etype="embedding", model="gpt-4o-mini")]
    cli("events", "import", write_events(tmp_path / "e.jsonl", events))
    report = cli("report", "margins", "--period", "2026-10", "--as-of", AS_OF, "--json")
    assert report["unpriced_usage"] == {"events": 2, "tokens": "2200000", "by_model": [
        {"model": "nova-9", "customers": 1, "events": 2, "tokens": "2200000", "cost": "0"}]}
    assert report["unmetered_usage"]["events"] == 1 and report["unmetered_usage"]["by_type"][0]["type"] == "embedding"
    by_type = cli("report", "margins", "--period", "2026-10", "--as-of", AS_OF, "--json", "--by", "type")
    assert {r["key"] for r in by_type["breakdown"]} == {"llm.call", "embedding"}  # attributed by type
    rows = list(csv.DictReader(io.StringIO(cli("report", "margins", "--period", "2026-10", "--as-of", AS_OF,
                                               "--csv"))))
    assert [(r["key"], r["events"], r["tokens"]) for r in rows if r["section"] == "unpriced:model"] == [
        ("nova-9", "2", "2200000")]
    html = tmp_path / "m.html"
    cli("report", "margins", "--period", "2026-10", "--as-of", AS_OF, "--html", html)
    assert "Unpriced and unmetered usage" in html.read_text() and "nova-9" in html.read_text()
    # once priced, the figure is gone and the cost is in the margins
    cli("costs", "add", nova_file(tmp_path))
    report = cli("report", "margins", "--period", "2026-10", "--as-of", AS_OF, "--json")
    assert report["unpriced_usage"]["events"] == 0 and report["customers"][0]["cost"] == "14.46"
    # 6 (nova-9) + 8.25 (the Sonnet 4.5 call's 1M-token prompt is over 200k: $6 + 100k x $22.50 per 1M) + 0.21


def test_simulation_prices_with_billing_costs(cli, db_url, tmp_path):
    spec = tmp_path / "pop.yaml"
    spec.write_text(f"""name: nova
period: 2026-10
seed: 1
plans: [{ROOT / 'plans' / 'token-api.yaml'}]
segments:
  all:
    customers: 3
    interactions: 10
    input_tokens: 1000
    output_tokens: 100
    model_mix: {{nova-9: 1}}
""")
    cli("simulate", "--population", spec, "--json", code=2)  # the shipped book cannot price nova-9
    costs_dir = tmp_path / "costs"
    costs_dir.mkdir()
    nova_file(costs_dir)
    sim = cli("simulate", "--population", spec, "--json", env={"BILLING_COSTS": str(costs_dir)})
    assert float(sim["plans"][0]["total"]["cost_exact"]) > 0  # 30 calls of nova-9, priced by the file
    # history with a cost lever: the ledger's unpriced events cost 0 under the lever, not a crash
    cli("events", "import", write_events(tmp_path / "e.jsonl", [nova_event(1), nova_event(2, model="claude-sonnet-4-5")]))
    sim = cli("simulate", "--plan", ROOT / "plans" / "token-api.yaml", "--history", "2026-10", "--cost-scale", "0.5",
              "--json")
    # the claude call at half price ((1M x $6 + 100k x $22.50 per 1M: its prompt is over 200k) x 0.5);
    # nova-9 unpriced: 0
    assert sim["plans"][0]["total"]["cost_exact"] == "4.125"


# ----------------------------------------------------------------------------- HTTP

@pytest.fixture
def api(tmp_path, monkeypatch):
    from billing.api.app import create_app
    from billing.api.auth import create_key
    from billing.catalog import Catalog
    from billing.store.db import make_engine, upgrade

    costs_dir = tmp_path / "costs"
    costs_dir.mkdir()
    nova_file(costs_dir)
    monkeypatch.setenv("BILLING_COSTS", str(costs_dir))
    get_settings.cache_clear()
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade(url)
    engine = make_engine(url)
    now = datetime(2026, 10, 25, tzinfo=UTC)
    application = create_app(engine, Catalog.from_paths(PLANS_DIR), clock=lambda: now, context_ttl=0, key_cache_ttl=0)
    client = TestClient(application)
    keys = {s: create_key(engine, s)[1] for s in ("ingest", "check", "read")}
    keys["acme-read"] = create_key(engine, "read", customer="acme")[1]
    admin = create_key(engine, "admin")[1]
    for c in ("acme", "globex"):
        client.post("/v1/customers", json={"id": c}, headers={"Authorization": f"Bearer {admin}"})
        client.post(f"/v1/customers/{c}/subscriptions", json={"plan": "token-api", "at": "2026-10-01T00:00:00Z"},
                    headers={"Authorization": f"Bearer {admin}"})

    def call(method: str, path: str, key: str, **kw):
        return client.request(method, path, headers={"Authorization": f"Bearer {keys[key]}"}, **kw)

    yield call
    engine.dispose()
    get_settings.cache_clear()


def test_api_prices_with_billing_costs_and_lists_what_it_cannot(api):
    r = api("POST", "/v1/events", "ingest", json=[nova_event(1), nova_event(2, model="mystery-1"),
                                                  nova_event(3, model="mystery-1", customer="globex"),
                                                  nova_event(4, customer="nobody")])
    assert [(x["status"], x["code"]) for x in r.json()["results"]] == [
        ("accepted", None), ("accepted", "unpriced_model"), ("accepted", "unpriced_model"),
        ("rejected", "customer_not_found")]
    listed = api("GET", "/v1/events/unpriced", "read").json()
    assert [(e["id"], e["customer"], e["status"]) for e in listed["events"]] == [("n2", "acme", "unpriced"),
                                                                                 ("n3", "globex", "unpriced")]
    assert listed["totals"][0]["events"] == 2 and listed["next_after"] is None
    own = api("GET", "/v1/events/unpriced", "acme-read").json()  # a key restricted to acme sees acme's
    assert [e["id"] for e in own["events"]] == ["n2"] and own["totals"][0]["events"] == 1
    assert api("GET", "/v1/events/unpriced?customer=globex", "acme-read").status_code == 403
    assert api("GET", "/v1/events/unpriced", "ingest").status_code == 403
    assert api("GET", "/v1/events/unpriced?status=bogus", "read").status_code == 422
    assert api("GET", "/v1/events/unpriced?limit=0", "read").status_code == 422
    assert api("GET", "/v1/events/unpriced?status=unmetered", "read").json()["events"] == []

    # check (the fast path) and reserve warn of a model the book cannot price; nova-9 is priced by BILLING_COSTS
    body = {"customer": "acme", "meter": "llm_calls", "model": "mystery-1"}
    check = api("POST", "/v1/quota/check", "check", json=body).json()
    assert check["allowed"] and [w["code"] for w in check["warnings"]] == ["unpriced_model"]
    assert "mystery-1" in check["warnings"][0]["message"]
    reserve = api("POST", "/v1/quota/reserve", "check", json=body).json()
    assert reserve["granted"] and [w["code"] for w in reserve["warnings"]] == ["unpriced_model"]
    assert "warnings" not in api("POST", "/v1/quota/check", "check", json={**body, "model": "nova-9"}).json()
    commit = api("POST", "/v1/quota/commit", "check", json={
        "reservation_id": reserve["reservation_id"], "event": {"properties": {"input_tokens": 10}}}).json()
    assert commit["event"] == "accepted" and commit["warnings"][0]["code"] == "unpriced_model"


# --------------------------------------------------------------- kill -9 mid-way

_RECOST_SCRIPT = """
import sys, time
import billing.ledger.recost as recost
from billing.catalog import Catalog
from billing.costs import CostBook
from billing.store.db import make_engine
recost.PAGE = 20
engine = make_engine(sys.argv[1])
slow = lambda n: time.sleep(0.3)  # a page commits, then the next one starts after a pause
recost.add_prices(engine, Catalog.from_paths(sys.argv[2]), list(CostBook.from_files([sys.argv[3]])),
                  origin="nova.yaml", progress=slow)
print("finished", flush=True)
"""


def test_a_recost_killed_midway_is_finished_by_the_next_one(cli, db_url, tmp_path):
    cli("events", "import", write_events(tmp_path / "e.jsonl", [nova_event(i) for i in range(200)]))
    path = nova_file(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _RECOST_SCRIPT, db_url, str(PLANS_DIR), str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            priced = sum(1 for _, u in stored(db_url).values() if u is None)
            if 0 < priced:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    priced = sum(1 for _, u in stored(db_url).values() if u is None)
    assert 0 < priced < 200 and priced % 20 == 0  # whole pages only
    counters = counter_rows(engine_for(db_url))
    assert sum(v[3] for (c, m, s), v in counters.items() if m == "llm_calls") == priced * 3 * 10**12
    # the price is stored: `costs add` again finds it unchanged and re-costs the rest
    again = cli("costs", "add", path, "--json")
    assert again["unchanged"] == 1 and again["events_recosted"] == 200 - priced
    assert all(u is None and c == 3 * 10**12 for c, u in stored(db_url).values())
    with engine_for_url(db_url) as engine:
        total = sum(v[3] for (c, m, s), v in counter_rows(engine).items() if m == "llm_calls")
    assert total == 200 * 3 * 10**12
