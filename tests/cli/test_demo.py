"""The Quickstart's first command: `billing demo` runs the whole loop on a fresh SQLite
ledger (customers in four segments, a synthetic month of events, the period closed) and
prints invoices and one line per customer whose figures match the ledger."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

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
