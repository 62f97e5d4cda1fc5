"""`billing simulate --population SPEC` end to end (Typer app built here; wiring is separate)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import typer
import yaml
from typer.testing import CliRunner

from billing.cli.simulate import simulate

D = Decimal
ROOT = Path(__file__).resolve().parents[2]
EX = ROOT / "examples"


def app() -> typer.Typer:
    a = typer.Typer()
    a.command("simulate")(simulate)
    a.command("noop")(lambda: None)
    return a


def invoke(*args: str):
    return CliRunner().invoke(app(), ["simulate", *args])


def test_margin_trap_json_two_plans_side_by_side():
    result = invoke("--population", str(EX / "margin-trap.yaml"), "--plan", str(EX / "plans" / "flat-20.yaml"),
                    "--plan", str(EX / "plans" / "flat-20-capped.yaml"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    flat, capped = data["plans"]
    assert flat["total"]["revenue"] == "80.00" and flat["total"]["cost"] == "241.20"
    assert flat["segments"]["2000"]["margin_pct"] == "-800.0"
    assert capped["total"]["revenue"] == "304.00"  # 20 + 20 + 44 + 220 (cap)
    assert [m["customer"] for m in capped["movers"]][:2] == ["2000-00001", "500-00001"]
    assert sum(b["customers"] for b in flat["margin_distribution"]) == 4


def small_population(tmp_path) -> str:
    """examples/population.yaml with fewer customers per segment (same shape, faster)."""
    data = yaml.safe_load((EX / "population.yaml").read_text())
    for segment, count in zip(data["segments"].values(), (8, 4, 2, 1)):
        segment["customers"] = count
    data["plans"] = [str(ROOT / "plans" / p) for p in ("support-chatbot.yaml", "cursor-pro.yaml", "team-credits.yaml")]
    path = tmp_path / "population.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_population_table_seed_and_levers(tmp_path):
    out = tmp_path / "sim.html"
    spec = small_population(tmp_path)
    result = invoke("--population", spec, "--seed", "3", "--cache-hit", "0.5",
                    "--route", "gpt-5-mini=0.3", "--html", str(out))
    assert result.exit_code == 0, result.output
    assert "Plans side by side" in result.output and "prompt-cache hit rate 50%" in result.output
    assert "(was " in result.output  # cost before the levers
    assert out.read_text().count("<svg") >= 4
    again = invoke("--population", spec, "--seed", "3", "--json")
    twice = invoke("--population", spec, "--seed", "3", "--json")
    assert again.output == twice.output  # reproducible
    other = invoke("--population", spec, "--seed", "4", "--json")
    assert json.loads(other.output)["plans"][0]["total"] != json.loads(again.output)["plans"][0]["total"]


def test_bad_input_exits_2_with_a_message(tmp_path):
    assert invoke("--plan", str(ROOT / "plans" / "support-chatbot.yaml")).exit_code == 2  # neither source
    bad = tmp_path / "bad.yaml"
    bad.write_text("segments: {a: {customers: 1}}\n")
    result = invoke("--population", str(bad))
    assert result.exit_code == 2 and "segments.a.interactions" in result.output
    result = invoke("--population", str(EX / "margin-trap.yaml"), "--route", "x=2")
    assert result.exit_code == 2 and "route" in result.output
    result = invoke("--population", str(EX / "margin-trap.yaml"), "--plan", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2


def test_quota_replay_and_semantic_cache_levers(tmp_path):
    population = small_population(tmp_path)
    plan = str(ROOT / "plans" / "cursor-pro.yaml")
    plain = json.loads(invoke("--population", population, "--plan", plan, "--json").output)["plans"][0]
    result = invoke("--population", population, "--plan", plan, "--enforce-quota", "--semantic-cache", "0.1",
                    "--semantic-cache-cost", "0.0001", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["levers"] == {"semantic_cache": {"share": "0.1", "cost_per_hit": "0.0001"}, "enforce_quota": True}
    replayed = data["plans"][0]
    assert replayed["quota"]["downgraded"] > 0 and plain["quota"] is None
    assert D(replayed["total"]["cost_exact"]) < D(plain["total"]["cost_exact"])
    bad = invoke("--population", population, "--plan", plan, "--semantic-cache-cost", "0.1")
    assert bad.exit_code == 2 and "--semantic-cache-cost needs --semantic-cache SHARE" in bad.output
    over = invoke("--population", population, "--plan", plan, "--semantic-cache", "1.5")
    assert over.exit_code == 2 and "semantic_cache.share" in over.output
