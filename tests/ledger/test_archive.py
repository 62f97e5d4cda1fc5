"""``billing events archive`` / ``verify-archive`` on SQLite and PostgreSQL: refused while a
period is not closed or not paid; then the files and manifest, the events gone (PostgreSQL:
the month's partition dropped), invoices verifying against the manifest, the close and the
recount still right without the events, a late event of an archived month rejected alone."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing.errors import BillingError
from billing.ledger.archive import archive, verify
from billing.ledger.recount import lock_for_recount, recount_all, recount_customer
from billing.store import partitions
from billing.store.types import to_us
from tests.support.archive import NOW, _count, _world, ev
from tests.support.db import counter_rows
from tests.support.ledger import CATALOG, _setup

@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_archive_refuses_open_or_unpaid_periods_then_moves_the_paid_ones(engine, tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow", reason="parquet archives need the parquet extra (pyarrow)")
    ledger, invoicing, invoices = _world(engine)
    out = tmp_path / "archive"
    with pytest.raises(BillingError) as refused:
        archive(engine, "2026-11", out, fmt, now=NOW)
    assert refused.value.code == "conflict" and "is finalized, not paid" in refused.value.message
    invoicing.mark_paid(invoices[0], NOW)
    with pytest.raises(BillingError) as refused:  # one of the two still unpaid
        archive(engine, "2026-11", out, fmt, now=NOW)
    assert "not paid" in refused.value.message and len(refused.value.details) == 1
    invoicing.mark_paid(invoices[1], NOW)
    with pytest.raises(BillingError) as refused:  # November is not closed
        archive(engine, "2026-12", out, fmt, now=datetime(2026, 12, 7, tzinfo=UTC))
    assert "in no closed period invoice" in refused.value.message
    assert _count(engine) == 85 and not out.exists()  # nothing changed

    counters = counter_rows(engine)
    manifest = archive(engine, "2026-11", out, fmt, now=NOW)
    assert manifest["events"] == 80 and [f["month"] for f in manifest["files"]] == ["2026-10"]
    assert {(p["customer"], p["events"], p["period_start"]) for p in manifest["periods"]} == {
        ("acme", 40, "2026-10-01T00:00:00Z"), ("beta", 40, "2026-10-01T00:00:00Z")}
    acme = next(p for p in manifest["periods"] if p["customer"] == "acme")
    assert acme["sums"]["input_tokens"] == str(sum(100 + i for i in range(40)))
    assert acme["sums"]["score"] == str(sum(Decimal(str(0.1 + (100 + i) / 1000)) for i in range(40)))  # exact
    assert acme["cost_pico"] > 0 and acme["invoice_provider_cost_pico"] == acme["cost_pico"]
    assert _count(engine) == 5  # November's stay
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            left = partitions.existing_months(partitions.sql_runner(conn))
        assert partitions.parse_month("2026-10") not in left and partitions.parse_month("2026-11") in left

    assert verify(engine, out) == {"ok": True, "events": 80, "periods": 2, "problems": []}
    # the close and a recount do not need the archived events
    assert invoicing.close(datetime(2026, 11, 2, tzinfo=UTC)).invoices == []
    with engine.begin() as conn:
        recount_all(conn, CATALOG)
    assert counter_rows(engine) == counters
    with engine.begin() as conn:  # (a subscription change's recount from before the archive's end)
        lock_for_recount(conn)
        recount_customer(conn, CATALOG, "acme", to_us(datetime(2026, 10, 1, tzinfo=UTC)))
    assert counter_rows(engine) == counters
    # a late event of the archived month is rejected alone; a replay of a November one is a duplicate
    late = ledger.record([ev("acme", "late", "2026-10-20T00:00:00Z"), ev("acme", "n0", "2026-11-03T00:00:00Z"),
                          ev("acme", "new", "2026-11-04T00:00:00Z")])
    assert [(r.status, r.code) for r in late.results] == [("rejected", "event_archived"), ("duplicate", None),
                                                         ("accepted", None)]
    # an archived id sent again with a time after the horizon is a conflict (its key is kept), on PostgreSQL
    again = ledger.record([ev("acme", "acme-o0", "2026-11-05T00:00:00Z")])
    if engine.dialect.name == "postgresql":
        assert again.results[0].status == "conflict"
    # archiving again: nothing left before November
    assert archive(engine, "2026-11", tmp_path / "again", fmt, now=NOW)["events"] == 0

    # verify notices a changed file and a changed invoice
    name = manifest["files"][0]["name"]
    if fmt == "jsonl":
        lines = gzip.open(out / name, "rt").read().splitlines()
        with gzip.open(out / name, "wt") as f:
            f.write("\n".join(lines[1:]) + "\n")
    else:
        (out / name).write_bytes((out / name).read_bytes()[:-10] + b"0123456789")
    broken = verify(engine, out)
    assert not broken["ok"] and any("SHA-256" in p for p in broken["problems"])


def test_a_manifest_that_disagrees_with_an_invoice_fails_verification(engine, tmp_path):
    _ledger, invoicing, invoices = _world(engine)
    for invoice_id in invoices:
        invoicing.mark_paid(invoice_id, NOW)
    out = tmp_path / "a"
    archive(engine, "2026-11", out, "jsonl", now=NOW)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["periods"][0]["invoice_total_minor"] += 1
    manifest["periods"][1]["cost_pico"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    problems = verify(engine, out)["problems"]
    assert len(problems) == 2
    assert any("archived as paid" in p for p in problems) and any("the files hold" in p for p in problems)


def test_bad_requests_are_clear_errors(engine, tmp_path):
    _setup(engine)
    for before, fmt, words in (("2026-13", "jsonl", "not a month"), ("2026-10", "csv", "--format"),
                               ("2999-01", "jsonl", "after the current month")):
        with pytest.raises(BillingError) as refused:
            archive(engine, before, tmp_path, fmt, now=NOW)
        assert words in refused.value.message
    assert archive(engine, "2026-10", tmp_path / "x", "jsonl", now=NOW)["events"] == 0  # an empty ledger


def test_the_cli_refuses_then_archives(db_url, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from billing.cli import app
    from billing.config import get_settings
    from billing.store.db import engine_for
    from tests.support.db import PLANS_DIR

    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(PLANS_DIR))
    get_settings.cache_clear()
    engine_for.cache_clear()
    try:
        engine = engine_for(db_url)
        _l, invoicing, invoices = _world(engine)
        runner = CliRunner()
        out = runner.invoke(app, ["events", "archive", "--before", "2026-11", "--out", str(tmp_path / "c")],
                            terminal_width=200)
        assert out.exit_code == 2 and "not paid" in out.output
        for invoice_id in invoices:
            invoicing.mark_paid(invoice_id, NOW)
        out = runner.invoke(app, ["events", "archive", "--before", "2026-11", "--out", str(tmp_path / "c"), "--json"],
                            terminal_width=200)
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)["events"] == 80
        out = runner.invoke(app, ["events", "verify-archive", str(tmp_path / "c")], terminal_width=200)
        assert out.exit_code == 0 and "80 events" in out.output
        out = runner.invoke(app, ["events", "verify-archive", str(tmp_path)], terminal_width=200)
        assert out.exit_code == 2 and "no manifest.json" in out.output
    finally:
        engine_for(db_url).dispose()
        get_settings.cache_clear()
        engine_for.cache_clear()


def test_an_archive_that_failed_midway_is_taken_again(engine, tmp_path, monkeypatch):
    """Writing the files failed after the horizon moved: the events are still there, late
    events of the range are refused already, and the next run archives them all."""
    import billing.ledger.archive as archive_module

    ledger, invoicing, invoices = _world(engine)
    for invoice_id in invoices:
        invoicing.mark_paid(invoice_id, NOW)
    real = archive_module._write

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(archive_module, "_write", full_disk)
    with pytest.raises(OSError):
        archive(engine, "2026-11", tmp_path / "a", "jsonl", now=NOW)
    assert _count(engine) == 85
    assert ledger.record([ev("acme", "late", "2026-10-20T00:00:00Z")]).results[0].code == "event_archived"
    monkeypatch.setattr(archive_module, "_write", real)
    assert archive(engine, "2026-11", tmp_path / "a", "jsonl", now=NOW)["events"] == 80
    assert _count(engine) == 5 and verify(engine, tmp_path / "a")["ok"]
