"""Reports from the hourly rollups equal reports from the events (issue 17, item 1), on
SQLite and PostgreSQL.

For a generated history (customers in UTC and in a time zone off the hour, events of several
types and models with token counts (a non-integer one at times), unpriced ones, dimension values that are text, integers, booleans, floats
or missing, late events, replays and conflicting resends), every margin report -- whole and
``--by`` each of type, model, a rolled-up dimension and a property the rollups do not keep
(``user`` under the default dimensions, ``feature`` only; ``team`` under both),
and two-way (``--by feature --by model``), with the daily series,
as of the period's end and mid-hour -- and every forecast (usage to date rated, and
projected), and the history simulation's totals under every shipped plan, are the same read
from the rollups as from the events alone; so it is after a re-cost prices the unpriced events; and the rollups ingestion kept
equal the ones ``billing db recount`` rebuilds from the events.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.catalog import Catalog
from billing.costs import ModelPrice
from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from billing.ledger.recost import add_prices
from billing.ledger.recount import lock_for_recount, rebuild_rollups
from billing.ledger.rollups import DEFAULT_DIMENSIONS, HOUR_US
from billing.reports import repository as repo
from billing.reports.forecast import forecast
from billing.reports.margins import margin_report
from billing.reports.rollup_usage import countable
from billing.simulate.history import history_totals
from billing.store import rollup_sql
from billing.store.types import to_us
from tests.support.db import reset_database

ROOT = Path(__file__).resolve().parents[2]
CATALOG = Catalog.from_paths(ROOT / "plans")
OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
NOW = NOV + timedelta(days=2)
MID_HOUR = OCT + timedelta(days=17, hours=5, minutes=41)
EDGES = (OCT, OCT - timedelta(hours=5, minutes=30), NOV, NOV - timedelta(hours=5, minutes=30), MID_HOUR)
_ids = itertools.count()

CUSTOMERS = (("utc", "UTC", "support-chatbot"), ("india", "Asia/Kolkata", "token-api"), ("nosub", "UTC", None))
VALUES = st.one_of(st.sampled_from(["chat", "search", "Chat", "a b"]), st.integers(-3, 3), st.booleans(),
                   st.sampled_from([1.5, 2.0]), st.none())


@st.composite
def histories(draw, unknown_model: str) -> list[dict]:
    n = draw(st.integers(1, 40))
    counts = st.one_of(st.integers(0, 5000), st.just(12.5)) if draw(st.booleans()) else st.integers(0, 5000)
    events = []
    for i in range(n):
        customer = draw(st.sampled_from([c for c, _, _ in CUSTOMERS]))
        # anywhere around the month, or near an edge of a window: the months in UTC and in
        # Kolkata (5:30 ahead), the mid-hour as_of
        if draw(st.booleans()):
            ts = OCT - timedelta(hours=7) + timedelta(minutes=draw(st.integers(0, 32 * 24 * 60)))
        else:
            ts = draw(st.sampled_from(EDGES)) + timedelta(minutes=draw(st.integers(-90, 90)))
        # token counts, or none (a tool call: other cost; rows of both kinds, mixed rows)
        props: dict = {"input_tokens": draw(counts),
                       "output_tokens": draw(st.integers(0, 900))} if draw(st.integers(0, 4)) else {"cost": "0.002"}
        for name in ("cache_read_tokens", "reasoning_tokens"):
            if draw(st.booleans()):
                props[name] = draw(st.integers(0, 3000))
        model = draw(st.sampled_from(["claude-sonnet-4-5", "gpt-5-mini", unknown_model, None]))
        if model is not None:
            props["model"] = model
        for name in ("feature", "user", "team", "score"):
            value = draw(VALUES)
            if value is not None:
                props[name] = value
        etype = draw(st.sampled_from(["llm.call", "llm.call", "request", "agent.step"]))
        events.append({"id": f"e{i}", "customer": customer, "type": etype,
                       "timestamp": ts.isoformat().replace("+00:00", "Z"), "properties": props})
    resent = draw(st.lists(st.integers(0, n - 1), max_size=5))
    for i in resent:  # replays (duplicates) and resends with other content (conflicts)
        again = json.loads(json.dumps(events[i]))
        if draw(st.booleans()):
            again["properties"]["output_tokens"] = again["properties"].get("output_tokens", 0) + 1
        events.append(again)
    return events


def _reports(engine, rollups: bool) -> list[dict]:
    out = []
    for as_of in (NOW, MID_HOUR):
        for by in (None, "type", "model", "feature", "user", "team", ("feature", "model"), ("team", "type"),
                   ("user", "feature")):
            out.append(margin_report(engine, CATALOG, "2026-10", as_of=as_of, by=by, rollups=rollups,
                                     daily=by in (None, "feature")).to_json())
    for as_of in (MID_HOUR, NOV - timedelta(minutes=7)):  # forecasts: usage to date, projected
        out.append([row.to_json() for row in forecast(engine, CATALOG, as_of, rollups=rollups)])
    out.append(history_totals(engine, "2026-10", list(CATALOG.all()), as_of=NOW, rollups=rollups))
    return out


def _rollup_rows(engine) -> dict:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT customer_id, hour, type, model, dims, events, cost_pico, cost_carry, "
                                    "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
                                    "reasoning_tokens, rounded, odd, tokened, sums FROM usage_rollup").all()
    return {tuple(r[:5]): (*r[5:16], {k: int(v) for k, v in json.loads(r[16]).items()}) for r in rows}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=st.data())
def test_reports_from_rollups_equal_reports_from_events(module_db_url, module_engine, data):
    reset_database(module_db_url)
    # the default dimensions, or a deployment's (BILLING_ROLLUP_DIMENSIONS=task,user)
    dims = data.draw(st.sampled_from([DEFAULT_DIMENSIONS, ("feature", "task", "user")]))
    with module_engine.begin() as conn:
        rollup_sql.set_dimensions(conn, dims)
    try:
        _check_reports(module_engine, data, dims)
    finally:
        with module_engine.begin() as conn:  # (the module's database keeps the migration's dimensions)
            rollup_sql.set_dimensions(conn, DEFAULT_DIMENSIONS)


def _check_reports(module_engine, data, dims: tuple[str, ...]) -> None:
    unknown = f"nova-{next(_ids)}"
    events = data.draw(histories(unknown))
    accounts = Accounts(module_engine, CATALOG)
    for customer, tz, plan in CUSTOMERS:
        accounts.create_customer(customer, timezone=tz, now=OCT - timedelta(days=3))
        if plan:
            accounts.subscribe(customer, plan, at=OCT - timedelta(days=1))
    ledger = Ledger(module_engine, CATALOG, clock=lambda: NOW)
    split = data.draw(st.integers(0, len(events)))  # two batches: the second holds late events and replays
    ledger.record(events[:split])
    ledger.record(events[split:])
    ledger.close()

    with module_engine.connect() as conn:  # the rollups answer the whole-hour part of the month
        assert repo.rollup_costs(conn, to_us(OCT), to_us(NOV)) is not None
        assert repo.rollup_costs(conn, to_us(OCT) + 1, to_us(OCT) + HOUR_US) is None  # no whole hour
        october = [e["properties"] for e in events if OCT <= datetime.fromisoformat(e["timestamp"]) < NOV]
        exact = all(type(p.get("input_tokens", 0)) is int and type(p.get("feature")) is not float
                    and ("user" not in dims or type(p.get("user")) is not float)
                    for p in october)  # token counts, dimension keys
        assert (repo.rollup_costs(conn, to_us(OCT), to_us(NOV), "feature", tokens=True) is not None) == exact
        if "user" not in dims:  # not rolled up: --by user reads the events (and equals below)
            assert repo.rollup_costs(conn, to_us(OCT), to_us(NOV), "user") is None
    assert all(countable(CATALOG.get(plan, 1), DEFAULT_DIMENSIONS) for _, _, plan in CUSTOMERS if plan)
    assert _reports(module_engine, True) == _reports(module_engine, False)

    add_prices(module_engine, CATALOG, [ModelPrice(model=unknown, provider="nova", effective_from=date(2026, 9, 1),
                                                   input="3", output="11", source="https://nova.example/pricing",
                                                   retrieved=date(2026, 11, 20))], origin="nova.yaml", now=NOW)
    assert _reports(module_engine, True) == _reports(module_engine, False)

    kept = _rollup_rows(module_engine)
    with module_engine.begin() as conn:
        lock_for_recount(conn)
        rebuild_rollups(conn)
    assert _rollup_rows(module_engine) == kept


def test_a_float_dimension_value_sends_the_breakdown_to_the_events(engine):
    """A value SQL reads its own way (a float) makes the rollups of its hours inexact for
    breakdowns by a dimension or model (the key of the row holds it), not for totals or types."""
    accounts = Accounts(engine, CATALOG)
    accounts.create_customer("acme", now=OCT)
    ledger = Ledger(engine, CATALOG, clock=lambda: NOW)
    ledger.record([{"id": "1", "customer": "acme", "type": "llm.call", "timestamp": "2026-10-02T10:00:00Z",
                    "properties": {"model": "gpt-5-mini", "input_tokens": 10, "feature": 1.5, "user": "u1"}}])
    ledger.close()
    with engine.connect() as conn:
        assert repo.rollup_costs(conn, to_us(OCT), to_us(NOV), "feature") is None
        assert repo.rollup_costs(conn, to_us(OCT), to_us(NOV), "user") is None
        rows = repo.rollup_costs(conn, to_us(OCT), to_us(NOV), "type")
        assert [(r.customer, r.key, r.events) for r in rows] == [("acme", "llm.call", 1)]
        assert repo.cost_by(conn, to_us(OCT), to_us(NOV), "feature") == repo.event_costs(conn, to_us(OCT), to_us(NOV),
                                                                                      "feature")


def test_stale_rollups_are_not_read_until_recount(engine):
    """Events stored before the rollups existed (flagged ``rollups_stale`` by the migration):
    reports read the events until ``recount_all`` rebuilds the rollups."""
    from billing.ledger.recount import recount_all

    accounts = Accounts(engine, CATALOG)
    accounts.create_customer("acme", now=OCT)
    Ledger(engine, CATALOG, clock=lambda: NOW).record(
        [{"id": str(i), "customer": "acme", "type": "llm.call", "timestamp": f"2026-10-0{i}T10:00:00Z",
          "properties": {"model": "gpt-5-mini", "input_tokens": 10 * i}} for i in range(1, 4)])
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM usage_rollup")
        conn.exec_driver_sql("INSERT INTO ledger_state (name, value) VALUES ('rollups_stale', 1)")
    with engine.connect() as conn:
        assert repo.rollup_costs(conn, to_us(OCT), to_us(NOV)) is None
        assert [r.events for r in repo.cost_by(conn, to_us(OCT), to_us(NOV))] == [3]
    with engine.begin() as conn:
        recount_all(conn, CATALOG, ["feature", "task", "user", "team"])
    with engine.connect() as conn:
        rows = repo.rollup_costs(conn, to_us(OCT), to_us(NOV))
        assert [r.events for r in rows] == [3]
        assert repo.rollup_costs(conn, to_us(OCT), to_us(NOV), "team") is not None
    with engine.begin() as conn:  # (the module's database keeps the migration's dimensions)
        recount_all(conn, CATALOG, DEFAULT_DIMENSIONS)


def test_two_way_breakdown_keys_and_allocation(engine):
    """``--by team --by model``: one row per pair of values (``(none)`` for a missing one),
    the revenue of each customer allocated across its pairs, summing to its revenue."""
    accounts = Accounts(engine, CATALOG)
    accounts.create_customer("acme", now=OCT - timedelta(days=1))
    accounts.subscribe("acme", "support-chatbot", at=OCT - timedelta(days=1))
    events = [{"id": str(i), "customer": "acme", "type": "llm.call", "timestamp": f"2026-10-0{1 + i % 5}T10:00:00Z",
               "properties": {"model": model, "input_tokens": 100, "feature": "support-chat",
                              **({"team": team} if team else {})}}
              for i, (team, model) in enumerate([("red", "gpt-5-mini"), ("red", "gpt-5-mini"),
                                                 ("red", "claude-sonnet-4-5"), ("blue", "gpt-5-mini"),
                                                 (None, "gpt-5-mini")])]
    Ledger(engine, CATALOG, clock=lambda: NOW).record(events)
    report = margin_report(engine, CATALOG, "2026-10", as_of=NOW, by=("team", "model"))
    assert report.by == "team, model"
    rows = {r.key: r.events for r in report.breakdown}
    assert rows == {"red / gpt-5-mini": 2, "red / claude-sonnet-4-5": 1, "blue / gpt-5-mini": 1,
                    "(none) / gpt-5-mini": 1}
    assert sum(r.revenue for r in report.breakdown) == report.revenue > 0
    daily = margin_report(engine, CATALOG, "2026-10", as_of=NOW, daily=True).daily  # the daily series
    assert [(d.day.day, d.events) for d in daily] == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]
    assert sum(d.revenue for d in daily) == report.revenue and sum(d.cost for d in daily) == report.cost
    with pytest.raises(ValueError):
        margin_report(engine, CATALOG, "2026-10", as_of=NOW, by=("team", "model", "user"))


def test_the_cost_split_reads_the_rollups_unless_a_row_mixes_tokened_and_other_events(engine):
    """AI cost / other cost (``costs_beyond``) from the rollups: a row whose events all carry
    token counts, or none, answers it (the events can be gone); a row mixing both, or one
    written before ``tokened`` existed (NULL), sends its customer to the events."""
    from billing.reports.split_repository import cost_split, costs_and_split, event_split, rollup_split

    def one_read_equals_two(conn) -> None:  # the margin report's single scan: the same as both reads
        both = costs_and_split(conn, start, end, "llm.call", ["outcome"])
        assert both == (repo.cost_by(conn, start, end, tokens=True), cost_split(conn, start, end, ["outcome"]))

    accounts = Accounts(engine, CATALOG)
    for c in ("pure", "mixed"):
        accounts.create_customer(c, now=OCT)
    tool = {"model": "gpt-5-mini", "cost": "0.25"}
    events = [{"id": f"p{i}", "customer": "pure", "type": "llm.call", "timestamp": f"2026-10-0{1 + i}T10:00:00Z",
               "properties": {"model": "gpt-5-mini", "input_tokens": 1000 * (i + 1)} if i % 2 else tool}
              for i in range(4)]
    events += [{"id": f"m{i}", "customer": "mixed", "type": "llm.call", "timestamp": "2026-10-02T10:00:00Z",
                "properties": {"model": "gpt-5-mini", "input_tokens": 500} if i else tool} for i in range(2)]
    Ledger(engine, CATALOG, clock=lambda: NOW).record(events)
    start, end = to_us(OCT), to_us(NOV)
    with engine.connect() as conn:
        from_events = event_split(conn, start, end, ["outcome"])
        assert [(r.customer, r.ai_cost_pico > 0, r.other_cost_pico) for r in from_events] == [
            ("mixed", True, 250_000_000_000), ("pure", True, 500_000_000_000)]
        assert rollup_split(conn, start, end, ["outcome"]) == from_events
        one_read_equals_two(conn)
    with engine.begin() as conn:  # the rollups answer "pure" alone: its events are not read
        conn.exec_driver_sql("DELETE FROM usage_event WHERE customer_id = 'pure'")
    with engine.connect() as conn:
        assert cost_split(conn, start, end, ["outcome"]) == from_events
        assert cost_split(conn, start, end, ["outcome"], rollups=False) == from_events[:1]
        one_read_equals_two(conn)
    with engine.begin() as conn:  # unknown (rows from before the column): the events
        conn.exec_driver_sql("UPDATE usage_rollup SET tokened = NULL")
    with engine.connect() as conn:
        assert cost_split(conn, start, end, ["outcome"]) == from_events[:1]
        one_read_equals_two(conn)
