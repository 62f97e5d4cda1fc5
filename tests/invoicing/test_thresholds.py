"""Threshold invoicing (``invoice_when_due_reaches``): the worked example of plans/README.md
("Threshold invoicing") through the CLI; a re-run, a retried run and two closes at once cut
one invoice; and the property that a period's threshold invoices and its closing invoice
(with late events and prepaid credits) bill exactly what one invoice bills."""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from typer.testing import CliRunner

from billing.catalog import Catalog, parse_plan_text
from billing.cli import app as cli
from billing.config import get_settings
from billing.invoicing import repository as invoicing_repo
from billing.invoicing import thresholds
from billing.store.db import engine_for
from tests.support.db import PLANS_DIR, World, shipped_catalog


# ------------------------------------------------------------------ worked example

@pytest.fixture
def cli_ledger(db_url, monkeypatch):
    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(PLANS_DIR))
    get_settings.cache_clear()
    engine_for.cache_clear()
    yield db_url
    engine_for.cache_clear()


def billing(*args: str) -> str:
    out = CliRunner().invoke(cli, list(args))
    assert out.exit_code == 0, out.output
    return out.output


def calls(tmp_path, prefix: str, *stamps: str):
    """One $6.00 call per instant: 1M input tokens ($3.00) and 200k output tokens ($3.00)."""
    path = tmp_path / f"{prefix}.jsonl"
    path.write_text("".join(json.dumps({
        "id": f"{prefix}{i}", "customer": "acme", "type": "llm.call", "timestamp": stamp,
        "properties": {"model": "claude-sonnet-4-5", "input_tokens": 1_000_000, "output_tokens": 200_000}}) + "\n"
        for i, stamp in enumerate(stamps)))
    billing("events", "import", str(path))


def close(as_of: str) -> list[int]:
    return json.loads(billing("invoice", "close", "--as-of", as_of, "--json"))["invoices"]


def test_worked_example_through_the_cli(cli_ledger, tmp_path):
    """plans/README.md, "Threshold invoicing": $24.00 on Oct 6, nothing on Oct 11 ($6.00
    accrued), $24.00 on Oct 21 (with an Oct 3 call that arrived late), $6.00 at the close:
    $54.00, the nine calls' one invoice."""
    billing("customers", "create", "acme")
    billing("subscriptions", "create", "acme", "api-threshold", "--at", "2026-10-01T00:00:00Z")
    calls(tmp_path, "a", "2026-10-02T10:00:00Z", "2026-10-02T11:00:00Z", "2026-10-05T10:00:00Z",
          "2026-10-05T11:00:00Z")
    assert len(close("2026-10-06T00:00:00Z")) == 1
    calls(tmp_path, "b", "2026-10-10T10:00:00Z")
    assert close("2026-10-11T00:00:00Z") == []
    calls(tmp_path, "c", "2026-10-20T10:00:00Z", "2026-10-20T11:00:00Z", "2026-10-03T10:00:00Z")
    assert len(close("2026-10-21T00:00:00Z")) == 1
    assert close("2026-10-21T00:00:00Z") == []  # a re-run: nothing accrued since
    calls(tmp_path, "d", "2026-10-25T10:00:00Z")
    assert len(close("2026-11-01T00:00:00Z")) == 1
    docs = json.loads(billing("invoice", "list", "--json"))
    assert [(d["number"], d["total"]) for d in docs] == [
        ("INV-000001", "24.00"), ("INV-000002", "24.00"), ("INV-000003", "6.00")]
    closing = json.loads(billing("invoice", "show", str(docs[2]["id"]), "--json"))
    assert [(ln["description"], ln["amount"]) for ln in closing["lines"]] == [
        ("Input tokens", "27.00"), ("Output tokens", "27.00"),
        ("Input tokens: invoiced on threshold invoices", "-24.00"),
        ("Output tokens: invoiced on threshold invoices", "-24.00")]
    first = json.loads(billing("invoice", "show", str(docs[0]["id"]), "--json"))
    assert [(ln["description"], ln["amount"]) for ln in first["lines"]] == [
        ("Input tokens (to 2026-10-06T00:00:00Z)", "12.00"), ("Output tokens (to 2026-10-06T00:00:00Z)", "12.00")]


# --------------------------------------------------------------- two closes at once

def _threshold_world(engine) -> World:
    world = World(engine, shipped_catalog(), datetime(2026, 10, 1, tzinfo=UTC))
    world.accounts.create_customer("acme", now=world.now)
    world.accounts.subscribe("acme", "api-threshold", at=world.now)
    world.at(datetime(2026, 10, 6, tzinfo=UTC))
    world.record({"id": f"c{i}", "customer": "acme", "type": "llm.call",
                  "timestamp": datetime(2026, 10, 2 + i, tzinfo=UTC).isoformat(),
                  "properties": {"model": "claude-sonnet-4-5", "input_tokens": 1_000_000,
                                 "output_tokens": 200_000}} for i in range(4))
    return world


def _threshold_docs(world: World) -> list[tuple[str, int]]:
    with world.engine.connect() as conn:
        return [(k, t) for k, t in conn.exec_driver_sql(
            "SELECT dedupe_key, total_minor FROM invoice ORDER BY id").all()]


@pytest.mark.parametrize("without_lock", [False, True], ids=["locked", "unlocked"])
def test_two_closes_at_once_cut_one_threshold_invoice(engine, monkeypatch, without_lock):
    """Two closes in threads, both reading the threshold invoices before either writes (a
    barrier): with the close lock the second waits and finds nothing accrued; without it
    (the lock patched away) the unique key refuses the second document, its close runs
    again and finds nothing accrued. Either way: one invoice of $24.00."""
    if engine.dialect.name != "postgresql" and without_lock:
        pytest.skip("SQLite serializes writers (BEGIN IMMEDIATE): no such race")
    world = _threshold_world(engine)
    if without_lock:
        monkeypatch.setattr(invoicing_repo, "lock_closes", lambda conn: None)
    barrier = threading.Barrier(2)
    read = thresholds.billed_on_thresholds
    first_read = threading.local()

    def racing_read(*args, **kwargs):
        billed = read(*args, **kwargs)
        if without_lock and not getattr(first_read, "done", False):
            first_read.done = True
            try:
                barrier.wait(timeout=2)
            except threading.BrokenBarrierError:
                pass
        return billed

    monkeypatch.setattr(thresholds, "billed_on_thresholds", racing_read)
    results, errors = [], []

    def run():
        try:
            results.append(world.invoicing.close(world.now))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(len(r.invoices) for r in results) == [0, 1]
    assert _threshold_docs(world) == [(f"thr:1:{int(datetime(2026, 10, 1, tzinfo=UTC).timestamp()) * 10**6}:1",
                                       2400)]


def test_a_retried_run_cuts_nothing_more(engine):
    world = _threshold_world(engine)
    for _ in range(3):
        world.invoicing.close(world.now)
    assert [t for _, t in _threshold_docs(world)] == [2400]


# ------------------------------------------------------------------------ property

PLAN = """
plan: {name}
version: 1
name: Requests
effective_from: 2026-01-01T00:00:00Z
{threshold}
meters: [{{key: requests, event_type: request}}]
charges:
  - key: requests
    meter: requests
    included: {{pooled: {included}}}
    price: {{model: graduated, tiers: [{{up_to: 50, unit_price: "{low}"}}, {{unit_price: "{high}"}}]}}
"""
_examples = itertools.count(1)


def _catalog(threshold: str, included: int, low: str, high: str) -> Catalog:
    kw = {"included": included, "low": low, "high": high}
    return Catalog([parse_plan_text(PLAN.format(name="thr", threshold=f'invoice_when_due_reaches: "{threshold}"', **kw),
                                    "thr.yaml"),
                    parse_plan_text(PLAN.format(name="one", threshold="", **kw), "one.yaml")])


# (day of October, requests, ingested after the close at this step: 0 = before any)
batches = st.lists(st.tuples(st.integers(1, 31), st.integers(1, 60), st.sampled_from([0, 0, 0, 1, 2, 3, 4])),
                   min_size=1, max_size=8)


@pytest.mark.slow  # a ledger per example, closes at up to six instants
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches, cuts=st.lists(st.integers(2, 31), min_size=1, max_size=4, unique=True),
       threshold=st.sampled_from(["0.01", "1.00", "5.00", "12.34"]), included=st.integers(0, 30),
       low=st.sampled_from(["0.10", "0.333"]), high=st.sampled_from(["0.05", "0.271"]),
       credit=st.sampled_from([None, "0.50", "3.00", "7.77", "40.00"]), late_october=st.integers(0, 5))
# credit drawn by threshold invoices, late events in the open period and after the close
@example(batches=[(2, 30, 0), (3, 20, 1), (4, 7, 2)], cuts=[4, 10], threshold="1.00", included=5, low="0.10",
         high="0.05", credit="0.50", late_october=2)
@example(batches=[(2, 60, 0), (9, 60, 1)], cuts=[5, 12], threshold="0.01", included=0, low="0.333",
         high="0.271", credit="7.77", late_october=0)
def test_threshold_invoices_sum_to_the_one_invoice(tmp_path_factory, batches, cuts, threshold, included, low, high,
                                                   credit, late_october):
    """Customer ``t`` on a threshold plan and ``o`` on the same plan without one get the
    same requests and the same prepaid credit. Closes run at each cut instant (events of a
    later step arrive after it, dated earlier: late events inside the open period), at the
    month's end, then October events arrive after October closed and November closes. Each
    customer's documents add up to the same amount, to the cent, and draw the same credit."""
    from tests.support.db import engine_for_url, sqlite_database

    catalog = _catalog(threshold, included, low, high)
    with sqlite_database(tmp_path_factory.mktemp("thr")) as url, engine_for_url(url) as engine:
        world = World(engine, catalog, datetime(2026, 10, 1, tzinfo=UTC))
        for cid, plan in (("t", "thr"), ("o", "one")):
            world.accounts.create_customer(cid, now=world.now)
            world.accounts.subscribe(cid, plan, at=world.now)
            if credit:
                world.accounts.grant_credits(cid, Decimal(credit), at=world.now, grant_id=f"g-{cid}")
        ids = itertools.count()
        steps = [datetime(2026, 10, day, 12, tzinfo=UTC) for day in sorted(cuts)]

        def send(day: int, n: int, now: datetime) -> None:
            ts = datetime(2026, 10, day, 6, tzinfo=UTC)
            if ts >= now:
                return  # not yet happened at this point of the story
            world.at(now)
            world.record({"id": f"r{next(ids)}", "customer": cid, "type": "request", "timestamp": ts.isoformat(),
                          "properties": {}} for cid in ("t", "o") for _ in range(n))

        for step, at in enumerate(steps):
            for day, n, after in batches:
                if after == step:
                    send(day, n, at)
            world.at(at)
            world.invoicing.close(at)
        month_end = datetime(2026, 11, 1, tzinfo=UTC)
        for day, n, after in batches:
            if after >= len(steps):
                send(day, n, month_end)
        world.at(month_end)
        world.invoicing.close(month_end)
        if late_october:
            send(15, late_october, datetime(2026, 11, 2, tzinfo=UTC))
        world.at(datetime(2026, 12, 1, tzinfo=UTC))
        world.invoicing.close(world.now)
        with engine.connect() as conn:
            totals = dict(conn.exec_driver_sql(
                "SELECT customer_id, SUM(total_minor) FROM invoice GROUP BY customer_id").all())
            burned = dict(conn.exec_driver_sql(
                "SELECT grant_id, SUM(amount_micro) FROM credit_burn GROUP BY grant_id").all())
        assert totals["t"] == totals["o"]
        assert burned.get("g-t") == burned.get("g-o")


# ------------------------------------------------------- a customer's own threshold

def test_a_customers_threshold_overrides_its_plans(cli_ledger, tmp_path):
    billing("customers", "create", "acme")
    billing("subscriptions", "create", "acme", "api-threshold", "--at", "2026-10-01T00:00:00Z")
    assert "50.00" in billing("customers", "threshold", "acme", "50.00")
    calls(tmp_path, "a", *(f"2026-10-0{d}T10:00:00Z" for d in range(2, 7)))  # 5 x 6.00 = 30.00
    assert close("2026-10-07T00:00:00Z") == []  # the plan's 20.00 would have cut
    calls(tmp_path, "b", *(f"2026-10-1{d}T10:00:00Z" for d in range(4)))  # 54.00 accrued
    assert len(close("2026-10-15T00:00:00Z")) == 1
    billing("customers", "threshold", "acme", "none")  # the plan's 20.00 again
    calls(tmp_path, "c", *(f"2026-10-2{d}T10:00:00Z" for d in range(4)))  # 24.00 since
    assert len(close("2026-10-25T00:00:00Z")) == 1
    assert len(close("2026-11-01T00:00:00Z")) == 1
    assert [d["total"] for d in json.loads(billing("invoice", "list", "--json"))] == ["54.00", "24.00", "0.00"]


@pytest.mark.parametrize("amount, why", [("0", "a positive amount"),
                                         ("0.001", "at least the minor unit of USD (0.01)"),
                                         ("12.345", "more decimals than the minor unit of USD"),
                                         ("-3", "a positive amount"), ("lots", "not an amount")])
def test_a_bad_customer_threshold_exits_2(cli_ledger, amount, why):
    billing("customers", "create", "acme")
    out = CliRunner().invoke(cli, ["customers", "threshold", "acme", "--", amount])
    assert out.exit_code == 2 and why in out.output, out.output


def test_the_closing_invoice_takes_back_threshold_invoices_after_the_override_is_gone(engine):
    """token-api has no threshold; the customer's 1.00 cuts one, then is removed: October's
    closing invoice still takes back what the threshold invoice billed."""
    world = World(engine, shipped_catalog(), datetime(2026, 10, 1, tzinfo=UTC))
    world.accounts.create_customer("acme", now=world.now)
    world.accounts.subscribe("acme", "token-api", at=world.now)
    world.accounts.set_threshold("acme", Decimal("1.00"))
    world.at(datetime(2026, 10, 6, tzinfo=UTC))
    world.record({"id": f"c{i}", "customer": "acme", "type": "llm.call",
                  "timestamp": datetime(2026, 10, 2 + i, tzinfo=UTC).isoformat(),
                  "properties": {"model": "claude-sonnet-4-5", "input_tokens": 100_000,
                                 "output_tokens": 20_000}} for i in range(4))
    assert len(world.invoicing.close(world.now).invoices) == 1
    world.accounts.set_threshold("acme", None)
    world.at(datetime(2026, 11, 1, tzinfo=UTC))
    world.invoicing.close(world.now)
    totals = [t for _, t in _threshold_docs(world)]
    # 4 calls cost 4 x 0.60 = 2.40 from the provider, x 1.25 = 3.00; the $50 minimum tops it up
    assert totals[0] == 300 and sum(totals) == 5000
