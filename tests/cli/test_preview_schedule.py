"""``billing invoice preview`` with seat changes (``--seats-at ISO=N``, ``subscription.seats``
events in the file) and, for plans that bill advance fees at the period's start or cut
threshold invoices, every invoice the customer receives in and at the end of the period:
the same figures the ledger's close issues (plans/README.md's worked examples)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from billing.cli import app

PLANS = Path(__file__).resolve().parents[2] / "plans"


def run(*args: str):
    return CliRunner().invoke(app, ["invoice", "preview", *map(str, args)])


def jsonl(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def requests(n: int, days: int, month: int = 10) -> list[dict]:
    return [{"id": f"r{month}-{i}", "customer": "acme", "type": "assistant.request",
             "timestamp": f"2026-{month:02d}-{1 + i % days:02d}T12:00:00Z", "properties": {}} for i in range(n)]


def test_advance_billing_preview_shows_the_ledgers_invoices(tmp_path):
    """The worked example: 5 seats, 8 from Oct 16 (a seat event), 6 from Oct 21 (--seats-at)."""
    seat_event = {"id": "s1", "customer": "acme", "type": "subscription.seats", "timestamp": "2026-10-16T00:00:00Z",
                  "properties": {"seats": 8}}
    events = jsonl(tmp_path / "e.jsonl", [*requests(1000, 31), seat_event])
    out = run("--plan", PLANS / "team-advance.yaml", "--events", events, "--seats", 5,
              "--seats-at", "2026-10-21T00:00:00Z=6", "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["customer"] == "acme"
    assert [(i["when"], i["issued_at"], i["total"]) for i in doc["invoices"]] == [
        ("start", "2026-10-01T00:00:00Z", "170.00"), ("end", "2026-11-01T00:00:00Z", "256.45")]
    assert [(ln["description"], ln["amount"]) for ln in doc["invoices"][1]["lines"]] == [
        ("Team seat: 3 seat(s) added 2026-10-16, prorated 51.61%", "46.45"),
        ("Assistant requests: 1000 used, 800 included", "0.00"),
        ("Assistant requests", "10.00"),
        ("Platform fee (in advance: 2026-11-01..2026-12-01)", "20.00"),
        ("Team seat (6 seats) (in advance: 2026-11-01..2026-12-01)", "180.00")]
    table = run("--plan", PLANS / "team-advance.yaml", "--events", events, "--seats", 5)
    assert table.exit_code == 0 and "start invoice, issued 2026-10-01T00:00:00Z" in table.stdout


def test_threshold_preview_cuts_at_daily_checks(tmp_path):
    """$6.00 calls: five by Oct 5 ($30.00 at the Oct 6 check), then $18.00 by Oct 21 (no
    cut), $24.00 at the Oct 26 check; the closing invoice bills the rest ($0.00)."""
    stamps = ["2026-10-02T10:00:00Z", "2026-10-02T11:00:00Z", "2026-10-03T10:00:00Z", "2026-10-05T10:00:00Z",
              "2026-10-05T11:00:00Z", "2026-10-10T10:00:00Z", "2026-10-20T10:00:00Z", "2026-10-20T11:00:00Z",
              "2026-10-25T10:00:00Z"]
    events = jsonl(tmp_path / "e.jsonl", [
        {"id": f"c{i}", "customer": "acme", "type": "llm.call", "timestamp": stamp,
         "properties": {"model": "claude-sonnet-4-5", "input_tokens": 1_000_000, "output_tokens": 200_000}}
        for i, stamp in enumerate(stamps)])
    out = run("--plan", PLANS / "api-threshold.yaml", "--events", events, "--json")
    assert out.exit_code == 0, out.output
    invoices = json.loads(out.stdout)["invoices"]
    assert [(i["when"], i["issued_at"][:10], i["total"]) for i in invoices] == [
        ("threshold", "2026-10-06", "30.00"), ("threshold", "2026-10-26", "24.00"), ("end", "2026-11-01", "0.00")]


def test_seat_changes_change_a_single_invoice(tmp_path):
    events = jsonl(tmp_path / "e.jsonl", [{"id": "x", "customer": "acme", "type": "llm.call",
                                          "timestamp": "2026-10-02T10:00:00Z", "properties": {}}])
    plain = json.loads(run("--plan", PLANS / "team-credits.yaml", "--events", events, "--seats", 2, "--json").stdout)
    more = json.loads(run("--plan", PLANS / "team-credits.yaml", "--events", events, "--seats", 2,
                          "--seats-at", "2026-10-16T00:00:00Z=4", "--json").stdout)
    # 2 seats added on Oct 16, 16 of 31 days left: 2 x 30 x 16/31 = 30.97
    assert [ln["amount"] for ln in more["lines"] if "added" in ln["description"]] == ["30.97"]
    assert plain["lines"][0]["amount"] == more["lines"][0]["amount"] == "60.00"


def test_bad_seat_changes_exit_2_naming_them(tmp_path):
    events = jsonl(tmp_path / "e.jsonl", requests(3, 3))
    for bad in ("2026-10-16T00:00:00Z", "2026-10-16T00:00:00Z=-1", "2026-10-16T00:00:00Z=many",
                "2026-10-16=3", "2026-10-16T00:00:00Z=2000000"):
        out = run("--plan", PLANS / "team-advance.yaml", "--events", events, "--seats-at", bad)
        assert out.exit_code == 2 and "--seats-at" in out.output, (bad, out.output)
    seat_event = {"id": "s", "customer": "acme", "type": "subscription.seats", "timestamp": "2026-10-02T00:00:00Z",
                  "properties": {"seats": "eight"}}
    out = run("--plan", PLANS / "team-advance.yaml", "--events", jsonl(tmp_path / "b.jsonl", [seat_event]))
    assert out.exit_code == 2 and "subscription.seats needs properties.seats" in out.output
