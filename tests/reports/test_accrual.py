"""Which revenue a month's margin report counts, over real closes (SQLite and PostgreSQL):
late-event adjustments count in the month they belong to, a voided invoice counts 0 and
is not re-rated, a plan change in an open month rates both parts, ``as_of`` sees only the
documents finalized by then; history simulations prorate mid-month joiners like the close
did; and neither reports nor simulations can write (they run on a read-only database)."""

from __future__ import annotations

import itertools
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url

from billing.catalog import load_plan_file
from billing.costs import CostBook
from billing.reports.forecast import forecast
from billing.reports.margins import margin_report
from billing.simulate.history import simulate_history
from tests.support.db import World, shipped_catalog

D = Decimal
ROOT = Path(__file__).resolve().parents[2]
CATALOG = shipped_catalog()
CHATBOT = load_plan_file(ROOT / "plans" / "support-chatbot.yaml")
_ids = itertools.count(1)


def at(month: int, day: int, hour: int = 0) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def messages(customer: str, n: int, start: datetime, step: timedelta = timedelta(hours=5)) -> list[dict]:
    return [{"id": f"m{next(_ids)}", "customer": customer, "type": "llm.call",
             "timestamp": (start + i * step).isoformat(),
             "properties": {"model": "claude-sonnet-4-5", "input_tokens": 2100, "output_tokens": 400,
                            "feature": "support-chat"}} for i in range(n)]


def record(world: World, events: list[dict]) -> None:
    """Ingest, with the clock moved past the latest event if it is behind it."""
    latest = max(datetime.fromisoformat(e["timestamp"]) for e in events)
    if world.now < latest:
        world.at(latest + timedelta(minutes=1))
    result = world.record(events)
    assert result.accepted == len(events), result.to_json(max_errors=3)


def revenue(world: World, label: str, when: datetime, customer: str) -> tuple[Decimal, str, Decimal]:
    row = next(c for c in margin_report(world.engine, CATALOG, label, as_of=when).customers if c.customer == customer)
    return row.revenue, row.source, row.cost


def invoices(world: World, customer: str) -> list:
    return [i for i in world.invoicing.list(customer) if i.status != "draft"]


def test_late_events_count_in_the_month_they_belong_to(engine):  # noqa: F811
    world = World(engine, CATALOG, at(10, 1))
    world.accounts.create_customer("c", now=at(10, 1))
    world.accounts.subscribe("c", "support-chatbot", at=at(10, 1))
    record(world, messages("c", 120, at(10, 1, 1)))  # 20 past the 100 included: $20 + $1
    world.at(at(11, 1, 1))
    world.invoicing.close(at(11, 1))
    world.at(at(11, 5))
    record(world, messages("c", 10, at(10, 30)))  # late: October usage arriving in November

    rev, source, cost = revenue(world, "2026-10", at(11, 20), "c")
    assert (rev, source) == (D("21.00"), "invoiced")  # the adjustment is not issued yet
    assert cost == 130 * D("0.0123")  # but the cost of the late events is October's

    world.at(at(12, 1, 1))
    world.invoicing.close(at(12, 1))
    november = [i for i in invoices(world, "c") if i.period_start == at(11, 1)]
    assert [i.total_minor for i in november] == [2050]  # $20 + the $0.50 October adjustment
    assert revenue(world, "2026-10", at(12, 2), "c")[:2] == (D("21.50"), "invoiced")
    assert revenue(world, "2026-11", at(12, 2), "c")[:2] == (D("20.00"), "invoiced")
    # as of before the close of October, nothing was invoiced yet: rated to date
    assert revenue(world, "2026-10", at(10, 20), "c")[1] == "rated"

    sim = simulate_history(engine, "2026-10", [CHATBOT], CostBook.load_default())
    row = next(r for r in sim.results[CHATBOT.ref] if r.customer == "c")
    assert row.actual == D("21.50") and row.revenue == D("21.50")  # re-rating reproduces what was billed


def test_a_voided_invoice_counts_zero_and_is_not_rerated(engine):  # noqa: F811
    world = World(engine, CATALOG, at(10, 1))
    world.accounts.create_customer("v", now=at(10, 1))
    world.accounts.subscribe("v", "support-chatbot", at=at(10, 1))
    record(world, messages("v", 30, at(10, 2)))
    world.at(at(11, 1, 1))
    world.invoicing.close(at(11, 1))
    (october,) = invoices(world, "v")
    world.invoicing.void(october.id, at(11, 10))
    assert revenue(world, "2026-10", at(11, 5), "v")[:2] == (D("20.00"), "invoiced")  # before the void
    assert revenue(world, "2026-10", at(11, 20), "v")[:2] == (D("0"), "invoiced")


def test_plan_change_in_an_open_month_rates_both_parts(engine):  # noqa: F811
    world = World(engine, CATALOG, at(10, 1))
    world.accounts.create_customer("p", now=at(10, 1))
    world.accounts.subscribe("p", "support-chatbot", at=at(10, 1))
    world.accounts.change_plan("p", "cursor-pro", at=at(10, 16))
    # support-chatbot for 15/31 of $20 = 9.68; cursor-pro's $20 seat in advance for 16/31 = 10.32
    assert revenue(world, "2026-10", at(10, 20), "p")[:2] == (D("20.00"), "rated")
    world.at(at(10, 20, 1))
    world.invoicing.close(at(10, 20))  # invoices the ended support-chatbot part only
    assert [i.total_minor for i in invoices(world, "p")] == [968]
    assert revenue(world, "2026-10", at(10, 21), "p")[:2] == (D("20.00"), "invoiced+rated")
    rows = {r.customer: r for r in forecast(engine, CATALOG, at(10, 21))}
    assert rows["p"].plan == "cursor-pro@v1" and rows["p"].projected_invoice == D("10.32")


def test_history_prorates_a_customer_who_joined_mid_month(engine):  # noqa: F811
    world = World(engine, CATALOG, at(10, 16))
    world.accounts.create_customer("j", now=at(10, 16))
    world.accounts.subscribe("j", "support-chatbot", at=at(10, 16))
    record(world, messages("j", 12, at(10, 17)))
    world.at(at(11, 1, 1))
    world.invoicing.close(at(11, 1))
    sim = simulate_history(engine, "2026-10", [CHATBOT], CostBook.load_default())
    (row,) = sim.results[CHATBOT.ref]
    assert row.actual == D("10.32") == row.revenue  # 16/31 of $20, as the close billed it


def _read_only(url: str, tmp_path: Path):
    """The same database through a connection that cannot write."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        copy = tmp_path / "read-only.db"
        shutil.copy(u.database, copy)
        copy.chmod(0o444)
        return create_engine(f"sqlite:///file:{copy}?mode=ro&uri=true")
    ro = create_engine(u.set(drivername="postgresql+psycopg"))

    @event.listens_for(ro, "connect")
    def _read_only_session(dbapi_conn, _):
        with dbapi_conn.cursor() as cur:
            cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        dbapi_conn.commit()

    return ro


def test_reports_and_simulations_run_on_a_read_only_database(db_url, engine, tmp_path):  # noqa: F811
    world = World(engine, CATALOG, at(10, 1))
    for cid, n in (("a", 40), ("b", 150)):
        world.accounts.create_customer(cid, now=at(10, 1))
        world.accounts.subscribe(cid, "support-chatbot", at=at(10, 1))
        record(world, messages(cid, n, at(10, 1, 2), timedelta(hours=4)))
    world.at(at(11, 1, 1))
    world.invoicing.close(at(11, 1))
    record(world, messages("a", 5, at(11, 2)))
    engine.dispose()
    ro = _read_only(db_url, tmp_path)
    try:
        with pytest.raises(Exception, match="(?i)read.?only"):  # the connection really cannot write
            with ro.begin() as conn:
                conn.exec_driver_sql("DELETE FROM usage_event")
        report = margin_report(ro, CATALOG, "2026-10", as_of=at(11, 20), by="feature")
        assert {c.customer: c.revenue for c in report.customers} == {"a": D("20.00"), "b": D("22.50")}
        assert margin_report(ro, CATALOG, "2026-11", as_of=at(11, 20)).customers[0].source == "rated"
        assert forecast(ro, CATALOG, at(11, 20))
        sim = simulate_history(ro, "2026-10", [CHATBOT, load_plan_file(ROOT / "plans" / "cursor-pro.yaml")],
                               CostBook.load_default())
        assert sim.actual_totals()[0] == D("42.50")
    finally:
        ro.dispose()


def test_margin_trap_segments_from_a_real_ledger(engine):  # noqa: F811
    """The brief's margin trap, end to end: a $20 plan, $0.09 of provider cost per interaction
    (10,000 input + 4,000 output tokens on a $3 / $15 model), 20 customers: 5 at 30, 5 at 150,
    8 at 500 and 2 at 2,000 interactions; the report's P25 / P50 / P90 / P99 rows read like the brief."""
    from billing.catalog import Catalog

    catalog = Catalog([*CATALOG.all(), load_plan_file(ROOT / "examples" / "plans" / "flat-20.yaml")])
    world = World(engine, catalog, at(10, 1))
    events = []
    for level, count in ((30, 5), (150, 5), (500, 8), (2000, 2)):
        for i in range(count):
            cid = f"u{level:04d}-{i:02d}"
            world.accounts.create_customer(cid, now=at(10, 1))
            world.accounts.subscribe(cid, "flat-20", at=at(10, 1))
            events += [{"id": f"t{n}", "customer": cid, "type": "llm.call",
                        "timestamp": (at(10, 1) + timedelta(minutes=20 * n)).isoformat(),
                        "properties": {"model": "claude-sonnet-4-5", "input_tokens": 10_000, "output_tokens": 4_000}}
                       for n in range(level)]
    record(world, events)
    world.at(at(11, 1, 1))
    world.invoicing.close(at(11, 1))
    report = margin_report(engine, catalog, "2026-10", as_of=at(11, 2))
    assert [s.sentence() for s in report.usage_segments()] == [
        "light user (P25): 30 interactions, $2.70 cost, $20.00 revenue, 87% margin",
        "median user (P50): 150 interactions, $13.50 cost, $20.00 revenue, 33% margin",
        "heavy user (P90): 500 interactions, $45.00 cost, $20.00 revenue, -125% margin",
        "power user (P99): 2,000 interactions, $180.00 cost, $20.00 revenue, -800% margin"]
    assert {c.source for c in report.customers} == {"invoiced"} and report.revenue == 20 * D(20)
    assert len(report.whales()) == 10  # everyone at 500 and 2,000 interactions costs more than $20
