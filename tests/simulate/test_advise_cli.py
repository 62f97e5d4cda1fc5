"""`billing advise` end to end: the 70%-at-P90 answer on the shipped example population,
confirmed by re-rating the suggested plan with `billing simulate`; bad input exits 2 naming
the option and writes nothing."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from billing.cli.advise import advise
from billing.cli.simulate import simulate

D = Decimal
ROOT = Path(__file__).resolve().parents[2]
EX = ROOT / "examples"
CHATBOT = ROOT / "plans" / "support-chatbot.yaml"


def app() -> typer.Typer:
    a = typer.Typer()
    a.command("advise")(advise)
    a.command("simulate")(simulate)
    return a


def invoke(*args: str):
    return CliRunner().invoke(app(), list(args))


def small_population(tmp_path: Path) -> Path:
    """examples/population.yaml with fewer customers per segment (same shape, faster)."""
    data = yaml.safe_load((EX / "population.yaml").read_text())
    for segment, n in zip(data["segments"].values(), (8, 4, 2, 1)):
        segment["customers"] = n
    data["plans"] = []
    path = tmp_path / "population.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def plan_with_fee(tmp_path: Path, amount: str) -> Path:
    text = CHATBOT.read_text()
    assert 'amount: "20.00"' in text
    path = tmp_path / f"chatbot-{amount}.yaml"
    path.write_text(text.replace('amount: "20.00"', f'amount: "{amount}"'))
    return path


def simulated_margin(population: Path, plan: Path, customer: str) -> Decimal:
    """One customer's margin % as `billing simulate` rates it (exact revenue and cost)."""
    result = invoke("simulate", "--population", str(population), "--plan", str(plan), "--json")
    assert result.exit_code == 0, result.output
    row = next(c for c in json.loads(result.output)["plans"][0]["customers"] if c["customer"] == customer)
    revenue, cost = D(row["revenue"]), D(row["cost"])  # exact
    return (revenue - cost) / revenue * 100


@pytest.mark.slow
def test_seventy_percent_at_p90_on_the_shipped_population_re_rated_by_simulate(tmp_path):
    population = EX / "population.yaml"
    html = tmp_path / "advice.html"
    result = invoke("advise", "--plan", str(CHATBOT), "--population", str(population), "--target-margin", "70",
                    "--segment", "P90", "--json", "--html", str(html))
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    suggestion = data["suggestion"]
    assert data["lever"]["text"] == "fee:base" and suggestion["target"]["status"] == "reached"
    value, customer = D(suggestion["target"]["value"]), suggestion["customer"]
    assert value == value.quantize(D("0.01"))
    # the figures README.md quotes
    assert (customer, value, D(suggestion["break_even"]["value"])) == ("medium-00053", D("1.52"), D(0))
    assert (suggestion["current"]["cost"], suggestion["current"]["margin_pct"]) == ("2.12", "91.7")
    assert (suggestion["target"]["at_value"]["margin_pct"], suggestion["target"]["one_step_less"]["margin_pct"]) == \
        ("70.03", "69.99")
    power = next(s for s in data["segments"] if s["segment"] == "power")
    assert (power["customers"], power["target"]["value"], power["break_even"]["value"]) == (5, "275.77", "47.73")
    # re-rated by `billing simulate` on a plan file carrying the suggested fee: reaches 70%;
    # one cent less does not
    assert simulated_margin(population, plan_with_fee(tmp_path, str(value)), customer) >= 70
    assert simulated_margin(population, plan_with_fee(tmp_path, str(value - D("0.01"))), customer) < 70
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "medium-00053" in page and "1.52 USD" in page


def test_table_output_names_the_answer_and_every_segment(tmp_path):
    result = invoke("advise", "--plan", str(CHATBOT), "--population", str(small_population(tmp_path)),
                    "--target-margin", "60", "--solve", "overage:messages", "--segment", "all")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "lever overage:messages (now 0.05 USD)" in out and "target margin 60% at all" in out
    for name in ("light", "medium", "heavy", "power", "P50", "P90", "P99", "Break-even"):
        assert name in out


def test_json_included_units_is_solved_downwards(tmp_path):
    result = invoke("advise", "--plan", str(CHATBOT), "--population", str(small_population(tmp_path)),
                    "--target-margin", "75", "--solve", "included:messages", "--segment", "heavy", "--json")
    assert result.exit_code == 0, result.output
    target = json.loads(result.output)["suggestion"]["target"]
    assert target["status"] in ("reached", "unreachable", "unbounded")
    if target["status"] == "reached":
        assert D(target["at_value"]["margin_pct"]) >= 75 > D(target["one_step_less"]["margin_pct"])


@pytest.mark.parametrize("args, message", [
    (["--target-margin", "100"], "no price reaches a margin of 100% or more"),
    (["--target-margin", "120"], "no price reaches a margin of 100% or more"),
    (["--target-margin", "-150"], "--target-margin -150: below -100%"),
    (["--target-margin", "seventy"], "--target-margin: not a number: 'seventy'"),
    (["--target-margin", "inf"], "--target-margin: not a number"),
    (["--target-margin", "70", "--segment", "P101"], "--segment P101: a percentile is P0 to P100"),
    (["--target-margin", "70", "--segment", "gold"], "--segment 'gold': not a segment (P0-P100, all, or one of "
                                                     "the population's: light, medium, heavy, power)"),
    (["--target-margin", "70", "--solve", "fee:nope"], "--solve: plan support-chatbot@v1 has no fee 'nope'"),
    (["--target-margin", "70", "--solve", "price"], "--solve: 'price': write one of"),
    (["--target-margin", "70", "--step", "0"], "--step: must be above 0"),
    (["--target-margin", "70", "--step", "0.0000000000001"], "--step 1E-13: has more than 12 decimal places"),
])
def test_bad_input_exits_2_naming_the_option_and_writes_nothing(tmp_path, args, message):
    html = tmp_path / "out.html"
    result = invoke("advise", "--plan", str(CHATBOT), "--population", str(small_population(tmp_path)),
                    "--html", str(html), *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not html.exists() and not list(tmp_path.glob(".out.html.*"))


def test_an_invalid_plan_lists_every_problem_with_its_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CHATBOT.read_text().replace('amount: "20.00"', 'amount: "-1"')
                   .replace("aggregation: count", "aggregation: median"))
    result = invoke("advise", "--plan", str(bad), "--population", str(small_population(tmp_path)),
                    "--target-margin", "70")
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert f"--plan {bad}: invalid plan" in out
    assert f"{bad}:13: fees[0].amount" in out and f"{bad}:18: meters[0].aggregation" in out


def test_exactly_one_source():
    result = invoke("advise", "--plan", str(CHATBOT), "--target-margin", "70")
    assert result.exit_code == 2 and "exactly one of --population" in result.output
