"""The Quickstart's first command: `billing demo` runs the whole loop on a fresh SQLite
ledger (customers in four segments, a synthetic month of events, the period closed) and
prints invoices and one line per customer whose figures match the ledger."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from billing.cli import app

PLANS = Path(__file__).resolve().parents[2] / "plans"


def test_demo_closes_a_month_and_prints_invoices_and_margins(tmp_path):
    db = tmp_path / "demo.db"
    result = CliRunner().invoke(app, ["demo", "--plans", str(PLANS), "--db", str(db)], terminal_width=200)
    assert result.exit_code == 0, result.output
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        invoices = conn.execute(text("SELECT customer_id, number, total_minor, status FROM invoice "
                                     "WHERE kind = 'invoice' ORDER BY number")).all()
        events = conn.execute(text("SELECT COUNT(*), SUM(cost_pico) FROM usage_event")).one()
    assert len(invoices) == 12 and {row.status for row in invoices} == {"finalized"}
    assert {c.split("-")[0] for c, *_ in invoices} == {"light", "medium", "heavy", "power"}
    assert events[0] > 1000
    rows = {m.group(1): m for m in re.finditer(
        r"│ (\w+-\d{3})\s+│ [\w-]+\s+│ (INV-\d{6}) │ ([\d.]+)\s+│ ([\d.]+)\s+│ (-?[\d.]+)\s+│", result.output)}
    assert set(rows) == {c for c, *_ in invoices}
    for customer, number, total_minor, _ in invoices:
        m = rows[customer]
        assert m.group(2) == number
        assert Decimal(m.group(3)) == Decimal(total_minor) / 100
        assert Decimal(m.group(3)) - Decimal(m.group(4)) == Decimal(m.group(5))
    all_row = re.search(r"│ All\s+│\s+│\s+│ ([\d.]+)\s+│ ([\d.]+)\s+│", result.output)
    assert Decimal(all_row.group(1)) == Decimal(sum(t for _, _, t, _ in invoices)) / 100
    assert Decimal(all_row.group(2)) == (Decimal(events[1]) / 10**12).quantize(Decimal("0.01"))


@pytest.mark.slow
def test_demo_runs_from_an_empty_directory_and_says_what_to_try_next(tmp_path):
    """`pip install -e . && billing demo` anywhere: the example plans ship with the package,
    and the demo ends with three commands that work on its ledger (each run here)."""
    import os
    import shlex
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLANS.parent), env.get("PYTHONPATH")) if p)
    demo = subprocess.run([sys.executable, "-m", "billing", "demo"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr
    assert (tmp_path / "billing-demo.db").exists() and not (tmp_path / "plans").exists()
    text_ = " ".join(demo.stdout.split())
    exports = re.search(r"export (BILLING_DATABASE_URL=\S+) (BILLING_PLANS_DIR=\S+)", text_)
    assert exports, demo.stdout[-2000:]
    for assignment in exports.groups():
        name, value = assignment.split("=", 1)
        env[name] = shlex.split(value)[0]
    commands = re.findall(r"(billing [^#]+?)\s+# ", text_)
    assert len(commands) == 3
    for command in commands:
        out = subprocess.run([sys.executable, "-m", *shlex.split(command)], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and out.stdout.strip(), (command, out.stderr)
