"""Plan files built to hurt the loader: an alias bomb (billion laughs), 10,000 levels of
nesting, bytes that are not UTF-8, a number with 5,000 digits, "1e999999", an alias inside
its own anchor, an oversized file. Each is refused quickly with a clear ``file:line: path:
message`` by the loader, `billing plans validate`, `billing invoice preview` and
`billing serve` (which loads every plan at start)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from billing.catalog import PlanInvalid, load_plan_file
from billing.cli import app
from billing.config import get_settings

ROOT = Path(__file__).resolve().parents[2]
HEAD = "plan: bomb\nversion: 1\nname: Bomb\neffective_from: 2026-01-01T00:00:00Z\n"
SUPPORT = (ROOT / "plans" / "support-chatbot.yaml").read_text()


def _laughs() -> str:
    text = HEAD + 'x0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, 10):
        text += f"x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]\n"
    return text


BOMBS: dict[str, tuple[bytes, int | None, str]] = {
    # name: (file content, the line named, words of the message)
    "billion_laughs": (_laughs().encode(), 9, "x4: more than 20,000 values once its aliases are expanded"),
    "deep_sequences": ((HEAD + "meters: " + "[" * 10_000 + "]" * 10_000 + "\n").encode(), 5,
                       "nested deeper than 32 levels"),
    "deep_mappings": ((HEAD + "meters: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n").encode(), 5,
                      "nested deeper than 32 levels"),
    "deep_block": ((HEAD + "deep:\n" + "".join(" " * i + "a:\n" for i in range(1, 300)) + " " * 300 + "1\n"
                    ).encode(), 36, "nested deeper than 32 levels"),
    "not_utf8": (HEAD.encode() + b"description: caf\xe9 \xff\n", 5, "not UTF-8: byte 0xe9 at column 17"),
    "huge_int": ((HEAD + "trial_days: " + "9" * 5_000 + "\n").encode(), 5, "as a number"),
    "exponent": (SUPPORT.replace('unit_price: "0.05"', 'unit_price: "1e999999"').encode(), 25,
                 "charges[0].price.unit_price: must be at most 1,000,000,000,000,000 in magnitude"),
    "yaml_float_exponent": (SUPPORT.replace('unit_price: "0.05"', "unit_price: 1.0e+999999").encode(), 25,
                            "charges[0].price.unit_price: must be at most"),
    "tiny": (SUPPORT.replace('unit_price: "0.05"', 'unit_price: "1e-999999"').encode(), 25,
             "charges[0].price.unit_price: has more than 12 decimal places"),
    "big_included": (SUPPORT.replace("pooled: 100", "pooled: 1e20").encode(), 24,
                     "charges[0].included.pooled: must be at most"),
    "recursive_alias": ((HEAD + "x: &a [1, *a]\n").encode(), 1, "an alias refers to a node that contains it"),
    "oversized": ((HEAD + "# " + "x" * 70_000 + "\n").encode(), None, "at most 65,536 bytes"),
    "currency": (SUPPORT.replace("currency: USD", "currency: DOL").encode(), 8,
                 "currency: 'DOL' is not an ISO 4217 currency code"),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_hostile_plan_is_refused_fast_with_file_and_line(tmp_path, name):
    content, line, words = BOMBS[name]
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(content)
    started = time.perf_counter()
    with pytest.raises(PlanInvalid) as caught:
        load_plan_file(path)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"{name} took {elapsed:.2f}s"
    text = str(caught.value)
    where = f"{path}:{line}: " if line else f"{path}: "
    assert text.startswith(where) or f"\n{where}" in text, text
    assert words in text, text


def test_the_limits_leave_real_plans_alone():
    """Every shipped plan, and anchors used the ordinary way, still load."""
    for path in sorted((ROOT / "plans").glob("*.yaml")):
        load_plan_file(path)
    anchors = SUPPORT.replace("charges:\n", "x-price: &price {model: per_unit, unit_price: \"0.05\"}\ncharges:\n")
    assert "x-price" in anchors  # (an unknown top-level key: reported, not a crash)
    with pytest.raises(PlanInvalid, match="x-price: unknown key"):
        from billing.catalog import parse_plan_text
        parse_plan_text(anchors, "anchors.yaml")


@pytest.mark.parametrize("name", ["billion_laughs", "deep_sequences", "not_utf8", "exponent"])
def test_the_commands_report_a_hostile_plan_without_a_traceback(tmp_path, monkeypatch, name):
    content, _line, words = BOMBS[name]
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / f"{name}.yaml").write_bytes(content)
    events = tmp_path / "events.jsonl"
    events.write_text('{"id": "e1", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-03T12:00:00Z", '
                      '"properties": {"model": "claude-sonnet-4-5", "input_tokens": 10}}\n')
    monkeypatch.setenv("BILLING_PLANS_DIR", str(plans))
    monkeypatch.setenv("BILLING_DATABASE_URL", f"sqlite:///{tmp_path / 'b.db'}")
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        for args, code in ((["plans", "validate", str(plans)], 1),
                           (["invoice", "preview", "--plan", str(plans / f"{name}.yaml"), "--events", str(events)], 2),
                           (["serve", "--port", "1"], 2)):
            started = time.perf_counter()
            out = runner.invoke(app, args)
            assert time.perf_counter() - started < 5.0, args
            assert out.exit_code == code, (args, out.output, out.exception)
            assert "Traceback" not in out.output and words in " ".join(out.output.split()), out.output
    finally:
        get_settings.cache_clear()
