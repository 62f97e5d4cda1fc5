"""The `billing` CLI: `plans validate` and `invoice preview` (no database)."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.cli import app

ROOT = Path(__file__).resolve().parents[2]
PLANS = ROOT / "plans"
CHATBOT = str(PLANS / "support-chatbot.yaml")
MESSAGE = {"model": "claude-sonnet-4-5", "input_tokens": 2100, "output_tokens": 400, "feature": "support-chat"}


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def message(i: int, customer: str, t: datetime, **extra) -> dict:
    return {"id": f"{customer}-{i}", "customer": customer, "type": "llm.call",
            "timestamp": t.isoformat().replace("+00:00", "Z"), "properties": {**MESSAGE, **extra}}


def write_events(tmp_path: Path, events: list[dict], raw_lines: dict[int, str] | None = None) -> Path:
    """events as JSONL; raw_lines replaces line numbers (1-based) with raw text."""
    lines = [json.dumps(e) for e in events]
    for number, text in (raw_lines or {}).items():
        lines[number - 1] = text
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def october(n: int, customer: str, start_day: int = 1, first_id: int = 0) -> list[dict]:
    """n messages every 10 minutes from 06:00 UTC on October ``start_day``."""
    base = datetime(2026, 10, start_day, 6, tzinfo=UTC)
    return [message(first_id + i, customer, base + timedelta(minutes=10 * i)) for i in range(n)]


@pytest.fixture
def two_customers(tmp_path) -> Path:
    # acme: 110 messages on Oct 1 + 10 on Oct 20; beta: 3 messages on Oct 5
    events = october(110, "acme") + october(10, "acme", 20, first_id=1000) + october(3, "beta", 5)
    return write_events(tmp_path, events)


def preview_json(*args):
    result = run("invoice", "preview", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- plans validate

def test_plans_validate_shipped_plans():
    result = run("plans", "validate", PLANS)
    assert result.exit_code == 0, result.stderr
    for plan in ("copilot-premium@v1", "cursor-pro@v1", "support-chatbot@v1", "support-resolutions@v1",
                 "team@v1", "token-api@v1"):
        assert plan in result.stdout


def test_plans_validate_reports_every_problem_with_the_file(tmp_path):
    good = tmp_path / "good.yaml"
    shutil.copy(PLANS / "cursor-pro.yaml", good)
    bad = tmp_path / "bad.yaml"
    bad.write_text("""\
plan: bad
name: Bad
effective_from: 2026-01-01T00:00:00Z
meters: [{key: m, event_type: request, agregation: sum}]
charges:
  - {key: c, meter: nope, price: {model: per_unit, unit_price: "-1"}}
""")
    result = run("plans", "validate", tmp_path)
    assert result.exit_code == 1
    assert "cursor-pro@v1" in result.stdout  # the good file still loads
    for where in (f"{bad}:4: meters[0].agregation: unknown key",
                  f"{bad}:6: charges[0].meter: unknown meter 'nope'",
                  f"{bad}:6: charges[0].price.unit_price: "):
        assert where in result.stderr
    assert "3 problem(s) found" in result.stderr


def test_plans_validate_json(tmp_path):
    (tmp_path / "bad.yaml").write_text("plan: bad\nname: [\n")
    result = run("plans", "validate", "--json", tmp_path)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["plans"] == [] and doc["problems"][0]["line"] == 3


def test_the_installed_command_validates_the_shipped_plans():
    exe = shutil.which("billing")
    if exe is None:
        pytest.skip("the billing entry point is not installed")
    done = subprocess.run([exe, "plans", "validate", "plans/"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "support-chatbot@v1" in done.stdout


# ---------------------------------------------------------------------------- preview

def test_preview_one_customer_prints_one_object(tmp_path):
    path = write_events(tmp_path, october(120, "acme"))
    doc = preview_json("--plan", CHATBOT, "--events", path)
    assert isinstance(doc, dict)
    assert doc["customer"] == "acme" and doc["currency"] == "USD"
    assert doc["period"] == {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}
    # 20.00 + (120 - 100) x 0.05 = 1.00
    assert [(ln["description"], ln["quantity"], ln["unit_price"], ln["amount"]) for ln in doc["lines"]] == [
        ("Support chatbot subscription", "1", "20", "20.00"),
        ("Chat messages: 120 used, 100 included", "100", "0", "0.00"),
        ("Chat messages", "20", "0.05", "1.00"),
    ]
    assert doc["total"] == "21.00"
    assert doc["provider_cost"] == "1.476"  # 120 x 0.0123


def test_preview_several_customers_prints_a_list(two_customers):
    docs = preview_json("--plan", CHATBOT, "--events", two_customers)
    assert isinstance(docs, list)
    # acme 120 messages -> 21.00; beta 3 messages -> 20.00
    assert [(d["customer"], d["total"]) for d in docs] == [("acme", "21.00"), ("beta", "20.00")]
    for doc in docs:
        assert {"customer", "currency", "period", "lines", "total"} <= set(doc)
        for line in doc["lines"]:
            assert {"description", "quantity", "unit_price", "amount"} <= set(line)
            assert isinstance(line["amount"], str) and "." in line["amount"]


def test_preview_customer_filter(two_customers):
    doc = preview_json("--plan", CHATBOT, "--events", two_customers, "--customer", "beta")
    assert isinstance(doc, dict) and doc["customer"] == "beta" and doc["total"] == "20.00"
    result = run("invoice", "preview", "--plan", CHATBOT, "--events", two_customers, "--customer", "zeta")
    assert result.exit_code == 2 and "zeta" in result.stderr


def test_preview_period_and_start_end(two_customers):
    doc = preview_json("--plan", CHATBOT, "--events", two_customers, "--customer", "acme", "--period", "2026-10")
    assert doc["total"] == "21.00"
    # November: no usage, the subscription alone
    doc = preview_json("--plan", CHATBOT, "--events", two_customers, "--customer", "acme", "--period", "2026-11")
    assert doc["period"]["start"] == "2026-11-01T00:00:00Z"
    assert doc["total"] == "20.00" and doc["lines"][1]["description"] == "Chat messages: 0 used, 100 included"
    # Oct 1 to Oct 16: only the first 110 messages -> 20.00 + 10 x 0.05
    doc = preview_json("--plan", CHATBOT, "--events", two_customers, "--customer", "acme",
                       "--start", "2026-10-01T00:00:00Z", "--end", "2026-10-16T00:00:00Z")
    assert doc["period"] == {"start": "2026-10-01T00:00:00Z", "end": "2026-10-16T00:00:00Z"}
    assert doc["total"] == "20.50"


def test_preview_seats(tmp_path):
    events = [{"id": f"r{i}", "customer": "acme", "type": "request",
               "timestamp": f"2026-10-{1 + i % 28:02d}T10:00:00Z", "properties": {}} for i in range(1600)]
    path = write_events(tmp_path, events)
    doc = preview_json("--plan", PLANS / "cursor-pro.yaml", "--events", path, "--seats", "3")
    # 3 x 20.00 = 60.00; 1,500 fast requests included, 100 slow at 0
    assert [ln["amount"] for ln in doc["lines"]] == ["60.00", "0.00", "0.00"]
    assert [ln["quantity"] for ln in doc["lines"]] == ["3", "1500", "100"]
    assert doc["total"] == "60.00"


def test_preview_timezone_shifts_period_boundaries(tmp_path):
    # 02:00Z on Oct 1 is still September 30 in New York (EDT, UTC-4)
    events = [message(0, "acme", datetime(2026, 10, 1, 2, tzinfo=UTC)),
              message(1, "acme", datetime(2026, 10, 1, 5, tzinfo=UTC)),
              message(2, "acme", datetime(2026, 11, 1, 3, tzinfo=UTC)),  # still Oct 31 in New York
              message(3, "acme", datetime(2026, 11, 1, 3, 59, tzinfo=UTC))]
    path = write_events(tmp_path, events)
    utc = preview_json("--plan", CHATBOT, "--events", path, "--period", "2026-10")
    assert utc["period"] == {"start": "2026-10-01T00:00:00Z", "end": "2026-11-01T00:00:00Z"}
    assert utc["lines"][1]["description"] == "Chat messages: 2 used, 100 included"  # events 0 and 1
    assert utc["provider_cost"] == "0.0246"
    ny = preview_json("--plan", CHATBOT, "--events", path, "--period", "2026-10", "--timezone", "America/New_York")
    assert ny["period"] == {"start": "2026-10-01T04:00:00Z", "end": "2026-11-01T04:00:00Z"}
    assert ny["lines"][1]["description"] == "Chat messages: 3 used, 100 included"  # events 1, 2, 3
    assert ny["provider_cost"] == "0.0369"
    # without --period: the customer's period holding the first event (September in New York)
    default = preview_json("--plan", CHATBOT, "--events", path, "--timezone", "America/New_York")
    assert default["period"] == {"start": "2026-09-01T04:00:00Z", "end": "2026-10-01T04:00:00Z"}
    assert default["lines"][1]["description"] == "Chat messages: 1 used, 100 included"


def test_preview_table_output(tmp_path):
    result = run("invoice", "preview", "--plan", CHATBOT, "--events", write_events(tmp_path, october(120, "acme")))
    assert result.exit_code == 0
    assert "Chat messages" in result.stdout and "21.00" in result.stdout


# ---------------------------------------------------------------------------- bad input

def test_unknown_plan_key_exits_2_naming_the_path(tmp_path):
    plan = tmp_path / "typo.yaml"
    plan.write_text((PLANS / "support-chatbot.yaml").read_text().replace("included:", "inclded:"))
    result = run("invoice", "preview", "--plan", plan, "--events", write_events(tmp_path, october(2, "acme")))
    assert result.exit_code == 2
    assert f"{plan}:" in result.stderr and "charges[0].inclded: unknown key" in result.stderr


@pytest.mark.parametrize("line, words", [
    ('{"id": "x", "customer": "acme", "type": "llm.call", "timestamp": ', "not valid JSON"),
    ('{"id": "x", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-02T00:00:00Z", '
     '"properties": {"model": "claude-sonnet-4-5", "input_tokens": -5}}', "negative_quantity"),
    ('{"id": "x", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-02T00:00:00Z", '
     '"properties": {"model": "gpt-17-ultra", "input_tokens": 5}}', "unknown_model"),
    ('{"id": "x", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-02T00:00:00"}', "bad_timestamp"),
    ('{"id": "x", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-02T00:00:00Z", '
     '"properties": {"cost": "abc"}}', "non_numeric_quantity"),
    ('[1, 2]', "must be a JSON object"),
])
def test_bad_event_line_exits_2_naming_the_line(tmp_path, line, words):
    path = write_events(tmp_path, october(4, "acme"), raw_lines={3: line})
    result = run("invoice", "preview", "--plan", CHATBOT, "--events", path)
    assert result.exit_code == 2
    assert f"{path}:3: " in result.stderr and words in result.stderr
    assert f"{path}:1" not in result.stderr and result.stdout == ""


def test_every_bad_line_is_listed(tmp_path):
    path = write_events(tmp_path, october(5, "acme"), raw_lines={2: "{", 4: "nope"})
    result = run("invoice", "preview", "--plan", CHATBOT, "--events", path)
    assert result.exit_code == 2 and f"{path}:2: " in result.stderr and f"{path}:4: " in result.stderr


def test_conflicting_replay_and_bad_options_exit_2(tmp_path):
    events = october(2, "acme")
    conflict = dict(events[0], properties={**MESSAGE, "input_tokens": 1})
    result = run("invoice", "preview", "--plan", CHATBOT, "--events", write_events(tmp_path, events + [conflict]))
    assert result.exit_code == 2 and "different content" in result.stderr
    # an exact replay is fine and counts once
    doc = preview_json("--plan", CHATBOT, "--events", write_events(tmp_path, events + events[:1]))
    assert doc["lines"][1]["description"] == "Chat messages: 2 used, 100 included"
    path = write_events(tmp_path, events)
    for args in (["--period", "2026-13"], ["--period", "2026-10", "--start", "2026-10-01T00:00:00Z"],
                 ["--start", "2026-10-01T00:00:00Z"], ["--start", "2026-10-05T00:00:00Z", "--end", "2026-10-01T00:00:00Z"],
                 ["--start", "2026-10-01T00:00:00", "--end", "2026-10-05T00:00:00Z"]):
        result = run("invoice", "preview", "--plan", CHATBOT, "--events", path, *args)
        assert result.exit_code == 2, args
    result = run("invoice", "preview", "--plan", CHATBOT, "--events", tmp_path / "missing.jsonl")
    assert result.exit_code == 2 and "missing.jsonl" in result.stderr


def test_a_conflicting_replay_names_both_lines(tmp_path):
    events = october(3, "acme")
    conflict = dict(events[0], properties={**MESSAGE, "input_tokens": 1})
    path = write_events(tmp_path, events + [events[1], conflict])  # line 4: exact replay, line 5: conflict
    result = run("invoice", "preview", "--plan", CHATBOT, "--events", path)
    assert result.exit_code == 2 and result.stdout == ""
    assert f"{path}:5: event_conflict: event 'acme-0' of customer 'acme' was already sent on line 1" in result.stderr
    assert f"{path}:4" not in result.stderr


def test_bad_timezone_and_a_period_of_the_wrong_length_exit_2(tmp_path):
    path = write_events(tmp_path, october(2, "acme"))
    result = run("invoice", "preview", "--plan", CHATBOT, "--events", path, "--timezone", "Mars/Olympus")
    assert result.exit_code == 2 and "--timezone: unknown time zone 'Mars/Olympus'" in result.stderr
    # a monthly plan is previewed for a month, not a year
    result = run("invoice", "preview", "--plan", CHATBOT, "--events", path, "--period", "2026")
    assert result.exit_code == 2 and "give the period as YYYY-MM" in result.stderr


def test_problems_print_as_text_not_terminal_markup(tmp_path):
    # rich would swallow "[a-z0-9]" and "[bold]" if messages were read as markup
    bad = tmp_path / "[bold] bad.yaml"
    bad.write_text("plan: Not A Key\nname: N\neffective_from: 2026-01-01T00:00:00Z\n")
    result = run("plans", "validate", bad)
    assert result.exit_code == 1
    assert "[bold] bad.yaml:1: plan: String should match pattern '^[a-z0-9][a-z0-9_.\\-]*$'" in result.stderr
    result = run("invoice", "preview", "--plan", bad, "--events", write_events(tmp_path, october(1, "acme")))
    assert result.exit_code == 2 and "'^[a-z0-9][a-z0-9_.\\-]*$'" in result.stderr


def test_a_metered_property_must_be_a_non_negative_number(tmp_path):
    # "pages" is no built-in quantity key: the plan's sum meter makes it one
    plan = tmp_path / "pages.yaml"
    plan.write_text("plan: pages\nname: Pages\neffective_from: 2026-01-01T00:00:00Z\n"
                    "meters: [{key: pages, event_type: ocr, aggregation: sum, property: pages}]\n"
                    "charges: [{key: pages, meter: pages, price: {model: per_unit, unit_price: '0.01'}}]\n")
    rows = [{"id": f"o{i}", "customer": "acme", "type": "ocr", "timestamp": "2026-10-02T00:00:00Z",
             "properties": {"pages": pages}} for i, pages in enumerate([10, -500, "many", 5])]
    result = run("invoice", "preview", "--plan", plan, "--events", write_events(tmp_path, rows))
    assert result.exit_code == 2 and result.stdout == ""
    assert ":2: negative_quantity: event 'o1': property 'pages'" in result.stderr
    assert ":3: non_numeric_quantity: event 'o2'" in result.stderr
    assert ":1:" not in result.stderr and ":4:" not in result.stderr
    doc = preview_json("--plan", plan, "--events", write_events(tmp_path, [rows[0], rows[3]]))
    assert doc["total"] == "0.15"
