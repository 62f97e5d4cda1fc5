"""Events the cost book cannot price (unknown model) or no plan meters (unknown type) are
kept, marked with the reason, listed, reported apart, and re-costed when a price arrives:
in an open period (usage, forecast, margins see it at once) and in an invoiced one (the
next close adds an adjustment; the finalized invoice never changes). On SQLite and
PostgreSQL, with ingestion running while prices are added."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from decimal import Decimal as D

import pytest

from billing.catalog import Catalog, parse_plan_text
from billing.costs import ModelPrice
from billing.store.flagged import flagged_events, flagged_totals
from billing.reservations.holds import Quota
from billing.ledger.ingest import Ledger
from billing.ledger.recost import add_prices, recost
from billing.ledger.recount import recount_all
from billing.reports.forecast import forecast
from billing.reports.margins import margin_report
from tests.support.db import World, counter_rows, documents, shipped_catalog

RESALE_YAML = """
plan: resale
version: 1
name: Resale (cost + 25%) (tests)
effective_from: 2026-01-01T00:00:00Z
currency: USD
meters:
  - {key: calls, event_type: llm.call, aggregation: count}
  - {key: input, event_type: llm.call, aggregation: sum, property: input_tokens}
charges:
  - key: inference
    name: Inference
    meter: calls
    price: {model: cost_plus, markup: "0.25"}
agent_limits:
  max_steps: 1000
"""
CATALOG = Catalog([*shipped_catalog().all(), parse_plan_text(RESALE_YAML, "resale.yaml")])
START = datetime(2026, 10, 1, tzinfo=UTC)
NOVA = ModelPrice(model="nova-9", provider="nova", effective_from=date(2026, 9, 1), input="2", output="10",
                  source="https://nova.example/pricing", retrieved=date(2026, 11, 20))
PICO = 10**12


def call(eid: str, ts: str, model: str = "nova-9", customer: str = "acme", etype: str = "llm.call",
         **tokens) -> dict:
    return {"id": eid, "customer": customer, "type": etype, "timestamp": ts,
            "properties": {"model": model, **(tokens or {"input_tokens": 1_000_000, "output_tokens": 100_000})}}


def make_world(engine, customers=("acme",), plan: str = "resale") -> World:
    world = World(engine, CATALOG, START)
    for c in customers:
        world.accounts.create_customer(c, now=START)
        world.accounts.subscribe(c, plan, at=START)
    return world


def event_rows(engine) -> dict[str, tuple]:
    """event id -> (cost_pico, unpriced, unmetered, properties)"""
    import json

    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT event_id, cost_pico, unpriced, unmetered, properties FROM usage_event").all()
    return {e: (int(c), u, m, json.loads(p) if isinstance(p, str) else p) for e, c, u, m, p in rows}


def assert_counters_are_what_a_recount_makes(engine) -> None:
    before = counter_rows(engine)
    with engine.begin() as conn:
        recount_all(conn, CATALOG)
    assert counter_rows(engine) == before


# ------------------------------------------------------------------------- keeping

def test_unpriced_and_unmetered_events_are_kept_with_their_reason(engine):
    world = make_world(engine, customers=("acme",))
    world.at(datetime(2026, 10, 20, tzinfo=UTC))
    batch = [call("known", "2026-10-05T10:00:00Z", model="claude-sonnet-4-5"),
             call("new-model", "2026-10-05T11:00:00Z"),
             call("embed", "2026-10-05T12:00:00Z", etype="embedding", model="gpt-4o-mini",
                  input_tokens=1_000_000),
             call("both", "2026-10-05T13:00:00Z", etype="vector.search", model="nova-vec", input_tokens=10),
             call("who", "2026-10-05T14:00:00Z", customer="nobody")]
    result = world.record(batch)
    got = [(r.status, r.code) for r in result.results]
    assert got == [("accepted", None), ("accepted", "unpriced_model"), ("accepted", "unmetered_type"),
                   ("accepted", "unpriced_model"), ("rejected", "customer_not_found")]  # customers: still rejected
    assert "nova-9" in result.results[1].message and "'vector.search'" in result.results[3].message
    assert result.to_json()["unpriced"] == 2 and result.to_json()["unmetered"] == 2
    rows = event_rows(engine)
    assert set(rows) == {"known", "new-model", "embed", "both"}
    assert rows["new-model"][:3] == (0, rows["new-model"][1], None) and "nova-9" in rows["new-model"][1]
    assert rows["embed"][1] is None and rows["embed"][2] == "no plan meters event type 'embedding'"
    assert rows["embed"][0] > 0  # unmetered, but priced: its cost is attributed
    assert rows["both"][0] == 0 and rows["both"][1] and rows["both"][2]
    counters = counter_rows(engine, "acme")
    calls = [v for (c, m, s), v in counters.items() if m == "calls"]
    everything = [v for (c, m, s), v in counters.items() if m == "*"]
    assert calls[0][2] == 2  # the unpriced llm.call counts as a call (its tokens are usage), at cost 0
    assert calls[0][3] == rows["known"][0]
    assert everything[0][2] == 4 and everything[0][3] == rows["known"][0] + rows["embed"][0]
    # a replay is a duplicate whatever the status: the status is derived, not content
    again = world.record(batch[:4])
    assert [r.status for r in again.results] == ["duplicate"] * 4
    assert [(r.status, r.code) for r in world.record([{**batch[1], "timestamp": "2026-10-05T11:00:01Z"}]).results] \
        == [("conflict", "event_conflict")]
    with engine.connect() as conn:
        listed = flagged_events(conn)
        # in the order stored (on PostgreSQL a chunk is stored in key order: the global lock order)
        order = [e.event_id for e in listed]
        assert sorted(order) == ["both", "embed", "new-model"]
        assert [e.event_id for e in flagged_events(conn, status="unpriced")] == [
            x for x in order if x in ("new-model", "both")]
        assert [e.event_id for e in flagged_events(conn, status="unmetered", customer="acme")] == [
            x for x in order if x in ("embed", "both")]
        assert [e.event_id for e in flagged_events(conn, after=listed[0].row_id, limit=1)] == [order[1]]
        totals = {(g.status, g.key): (g.customers, g.events, g.tokens) for g in flagged_totals(conn)}
    assert totals == {("unpriced", "nova-9"): (1, 1, D(1_100_000)), ("unpriced", "nova-vec"): (1, 1, D(10)),
                      ("unmetered", "embedding"): (1, 1, D(1_000_000)), ("unmetered", "vector.search"): (1, 1, D(10))}
    oct_us = (1790812800000000, 1793491200000000)
    with engine.connect() as conn:  # over a window, of named customers: the same totals
        assert flagged_totals(conn, start_us=oct_us[0], end_us=oct_us[1]) == flagged_totals(conn)
        assert flagged_totals(conn, start_us=oct_us[0], end_us=oct_us[1], customers=["acme"]) == flagged_totals(conn)
        assert flagged_totals(conn, start_us=oct_us[1], end_us=oct_us[1] + 1) == []
    if engine.dialect.name == "sqlite":  # ... read through the flagged events' partial indexes, never the window's events
        statements: list[str] = []
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            raw.set_trace_callback(statements.append)
            try:
                flagged_totals(conn, start_us=oct_us[0], end_us=oct_us[1])
                flagged_totals(conn, start_us=oct_us[0], end_us=oct_us[1], customers=["acme", "other"])
            finally:
                raw.set_trace_callback(None)
            reads = [q for q in statements if q.lstrip().upper().startswith("SELECT")]
            assert len(reads) == 4
            for q in reads:
                plan = " ".join(str(r[-1]) for r in raw.execute(f"EXPLAIN QUERY PLAN {q}").fetchall())
                assert "ix_usage_event_unpriced" in plan or "ix_usage_event_flagged" in plan, plan


def test_the_longest_and_oddest_names_are_kept_or_rejected_cleanly(engine):
    world = make_world(engine)
    world.at(datetime(2026, 10, 20, tzinfo=UTC))
    long_model = "m" * 300  # stored as its first 200 characters; the reason is cut to fit its column
    result = world.record([call("long", "2026-10-05T10:00:00Z", model=long_model),
                           call("t100", "2026-10-05T10:00:00Z", etype="t" * 100),
                           call("t101", "2026-10-05T10:00:00Z", etype="t" * 101),
                           call("nul", "2026-10-05T10:00:00Z", etype="a\x00b")])
    assert [(r.status, r.code) for r in result.results] == [
        ("accepted", "unpriced_model"), ("accepted", "unpriced_model"), ("rejected", "event_invalid"),
        ("rejected", "event_invalid")]
    rows = event_rows(engine)
    assert len(rows["long"][1]) <= 500 and rows["t100"][2] == f"no plan meters event type '{'t' * 100}'"


# ------------------------------------------------------------------------ re-costing

def test_an_unpriced_event_is_billed_once_its_price_arrives(engine):
    """Open period: usage, forecast and margins show the new cost at once. Invoiced period:
    the next close adds an adjustment (cost-plus: the invoice changes); the finalized
    invoice stays as it was. Adding the same price again changes nothing."""
    world = make_world(engine)
    quota = Quota(engine, CATALOG, world.ledger, clock=lambda: world.now)
    try:
        world.at(datetime(2026, 10, 20, tzinfo=UTC))
        october = world.record([call("oct-known", "2026-10-05T10:00:00Z", model="claude-sonnet-4-5",
                                     input_tokens=100_000, output_tokens=10_000),  # $0.30 + $0.15
                                call("oct-new", "2026-10-06T10:00:00Z")])  # nova-9: $2 + $1 once priced
        assert [r.code for r in october.results] == [None, "unpriced_model"]
        world.at(datetime(2026, 11, 1, 1, tzinfo=UTC))
        closed = world.invoicing.close(datetime(2026, 11, 1, tzinfo=UTC))
        assert len(closed.invoices) == 1
        oct_invoice = world.invoicing.get(closed.invoices[0])
        assert [(ln.key, ln.amount_minor) for ln in oct_invoice[1]] == [("inference", 56)]  # 0.45 x 1.25
        world.at(datetime(2026, 11, 10, tzinfo=UTC))
        world.record([call("nov-new", "2026-11-05T10:00:00Z", input_tokens=2_000_000)])  # $4 once priced

        # before the price: the open period does not see the cost; the report keeps it apart
        assert quota.usage("acme")["meters"]["calls"]["provider_cost"] == "0"
        november = margin_report(engine, CATALOG, "2026-11", as_of=world.now)
        assert november.cost == 0 and [(g.key, g.events, g.tokens) for g in november.unpriced_usage] == [
            ("nova-9", 1, D(2_000_000))]
        assert november.to_json()["unpriced_usage"]["by_model"] == [
            {"model": "nova-9", "customers": 1, "events": 1, "tokens": "2000000", "cost": "0"}]
        assert [r.cost_to_date for r in forecast(engine, CATALOG, world.now)] == [0]
        documents_before = documents(engine)

        added = add_prices(engine, CATALOG, [NOVA], origin="nova.yaml", now=world.now)
        assert (added.events, added.cost_pico, added.invoices_marked) == (2, 7 * PICO, 1)
        assert added.prices.added == ["nova-9@2026-09-01"] and added.by_model == {"nova-9": 2}
        rows = event_rows(engine)
        assert (rows["oct-new"][:2], rows["nov-new"][:2]) == ((3 * PICO, None), (4 * PICO, None))
        assert documents(engine) == documents_before  # nothing invoiced changed

        # the open period sees it now: usage, forecast, margins (quota's book noticed the price)
        assert quota.usage("acme")["meters"]["calls"]["provider_cost"] == "4"
        november = margin_report(engine, CATALOG, "2026-11", as_of=world.now)
        assert november.cost == 4 and november.unpriced_usage == []
        assert [(r.cost_to_date, r.invoice_to_date) for r in forecast(engine, CATALOG, world.now)] == [
            (D(4), D("5.00"))]
        assert_counters_are_what_a_recount_makes(engine)

        # the same price again: nothing changes
        again = add_prices(engine, CATALOG, [NOVA], origin="nova.yaml", now=world.now)
        assert (again.prices.changed, again.events, again.invoices_marked) == (False, 0, 0)
        assert event_rows(engine) == rows

        # the next close corrects October through the late-event path
        world.at(datetime(2026, 12, 1, 1, tzinfo=UTC))
        closed = world.invoicing.close(datetime(2026, 12, 1, tzinfo=UTC))
        assert len(closed.invoices) == 1 and closed.adjusted_periods == 1 and closed.credit_notes == []
        _inv, lines = world.invoicing.get(closed.invoices[0])
        assert [(ln.kind, ln.key, ln.amount_minor) for ln in lines] == [
            ("usage", "inference", 500), ("adjustment", "inference", 375)]  # 4.31 - 0.56 for October
        assert lines[1].service_start == START
        assert documents(engine)[0] == documents_before[0]  # the October invoice, as finalized
        assert world.invoicing.close(datetime(2026, 12, 1, tzinfo=UTC)).invoices == []  # idempotent
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM invoice_recost").scalar_one() == 0
    finally:
        quota.close()


def test_recost_waits_for_a_subscription_that_can_take_the_adjustment(engine):
    """A re-costed invoiced period whose increase cannot be billed in this close (no new
    invoice of the subscription yet) stays marked and is billed by the next close."""
    world = make_world(engine)
    world.at(datetime(2026, 10, 20, tzinfo=UTC))
    world.record([call("oct-new", "2026-10-06T10:00:00Z")])
    world.at(datetime(2026, 11, 1, 1, tzinfo=UTC))
    world.invoicing.close(datetime(2026, 11, 1, tzinfo=UTC))
    assert add_prices(engine, CATALOG, [NOVA], origin="nova.yaml", now=world.now).invoices_marked == 1
    world.at(datetime(2026, 11, 15, tzinfo=UTC))  # (a close as of a later instant than the clock is refused)
    closed = world.invoicing.close(datetime(2026, 11, 15, tzinfo=UTC))  # November not over: nothing to carry it
    assert closed.invoices == [] and closed.adjusted_periods == 0
    world.at(datetime(2026, 12, 1, 0, 5, tzinfo=UTC))
    closed = world.invoicing.close(datetime(2026, 12, 1, tzinfo=UTC))
    _inv, lines = world.invoicing.get(closed.invoices[0])
    assert [(ln.kind, ln.amount_minor) for ln in lines] == [("usage", 0), ("adjustment", 375)]


def test_task_usage_and_commits_move_with_the_recost(engine):
    """A quota commit whose model has no price: the answer warns, the event is stored
    unpriced, its task counts cost 0; the re-cost moves the task's cost by the exact delta."""
    world = make_world(engine)
    quota = Quota(engine, CATALOG, world.ledger, clock=lambda: world.now)
    try:
        world.at(datetime(2026, 10, 20, tzinfo=UTC))
        r = quota.reserve("acme", "calls", model="nova-9", task="t1")
        assert r.granted and [w["code"] for w in r.to_json()["warnings"]] == ["unpriced_model"]
        answer = quota.commit(r.id, {"properties": {"input_tokens": 500_000, "output_tokens": 0}})
        assert answer["event"] == "accepted" and [w["code"] for w in answer["warnings"]] == ["unpriced_model"]
        plain = quota.reserve("acme", "calls", model="claude-sonnet-4-5", task="t1")
        assert "warnings" not in plain.to_json()
        assert "warnings" not in quota.commit(plain.id, {"properties": {"input_tokens": 1000}})
        odd = quota.reserve("acme", "calls")
        answer = quota.commit(odd.id, {"type": "tool.call", "properties": {"tool": "search"}})
        assert [w["code"] for w in answer["warnings"]] == ["unmetered_type"]
        with engine.connect() as conn:
            before = conn.exec_driver_sql("SELECT cost_pico FROM agent_task_usage").scalar_one()
        assert before == 1000 * 3_000_000  # the claude call only
        add_prices(engine, CATALOG, [NOVA], origin="nova.yaml", now=world.now)
        with engine.connect() as conn:
            after = conn.exec_driver_sql("SELECT cost_pico FROM agent_task_usage").scalar_one()
        assert after - before == 1 * PICO  # 500k input tokens at $2 per 1M
        assert_counters_are_what_a_recount_makes(engine)
        # the quota service's book sees the stored price within its ttl (1 s; 0 here): no warning any more
        quota.ledger.costs.ttl = 0
        assert "warnings" not in quota.check("acme", "calls", model="nova-9").to_json()
    finally:
        quota.close()


def test_check_warns_of_a_model_it_cannot_price_now(engine):
    world = make_world(engine)
    quota = Quota(engine, CATALOG, world.ledger, clock=lambda: datetime(2026, 10, 20, tzinfo=UTC))
    try:
        decision = quota.check("acme", "calls", model="nova-9").to_json()
        assert decision["outcome"] == "allow"
        assert decision["warnings"] == [{"code": "unpriced_model", "message": decision["warnings"][0]["message"]}]
        assert "nova-9" in decision["warnings"][0]["message"]
        assert "warnings" not in quota.check("acme", "calls", model="gpt-4o").to_json()
        assert "warnings" not in quota.check("acme", "calls").to_json()
        # a model whose first price is later than now
        later = NOVA.model_copy(update={"effective_from": date(2026, 12, 1)})
        add_prices(engine, CATALOG, [later], origin="later.yaml")
        quota.ledger.costs.ttl = 0  # notice the stored prices at once
        assert "in force" in quota.check("acme", "calls", model="nova-9").to_json()["warnings"][0]["message"]
    finally:
        quota.close()


def test_recost_by_the_book_alone_prices_what_it_can_and_keeps_the_rest(engine, tmp_path, monkeypatch):
    """``recost`` with the process's book (BILLING_COSTS changed): prices the models it knows,
    leaves the others unpriced, and a second run changes nothing."""
    world = make_world(engine)
    world.at(datetime(2026, 10, 20, tzinfo=UTC))
    world.record([call("a", "2026-10-06T10:00:00Z"), call("b", "2026-10-06T10:00:00Z", model="other-1")])
    first = recost(engine, CATALOG)
    assert (first.events, first.still_unpriced) == (0, 0)  # the book knows neither: not even looked at
    from billing.costs import dump_yaml
    from billing.costs import CostBook
    from billing.config import get_settings

    (tmp_path / "nova.yaml").write_text(dump_yaml(CostBook([NOVA])))
    monkeypatch.setenv("BILLING_COSTS", str(tmp_path))
    get_settings.cache_clear()
    try:
        done = recost(engine, CATALOG)
        assert (done.events, done.cost_pico, done.by_model) == (1, 3 * PICO, {"nova-9": 1})
        assert recost(engine, CATALOG).events == 0
    finally:
        get_settings.cache_clear()
    rows = event_rows(engine)
    assert rows["a"][1] is None and rows["b"][1] is not None


def test_prices_that_clash_with_the_stored_ones_change_nothing(engine):
    from billing.costs import CostBookError

    world = make_world(engine)
    add_prices(engine, CATALOG, [NOVA.model_copy(update={"aliases": ("nova",)})], origin="one.yaml")
    clash = NOVA.model_copy(update={"model": "nova-x", "aliases": ("nova",)})  # the alias of another model
    with pytest.raises(CostBookError, match="alias 'nova' claimed by both"):
        add_prices(engine, CATALOG, [clash], origin="two.yaml")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT model FROM cost_price").scalars().all() == ["nova-9"]
        assert conn.exec_driver_sql("SELECT value FROM ledger_state WHERE name = 'cost_version'").scalar_one() == 1
    assert world.ledger.costs.book.resolve("nova") is None  # built before: it never saw either


# ------------------------------------------------------------ ingestion meanwhile

def test_events_ingested_while_prices_are_added_are_priced_exactly_once(engine):
    """Ledgers whose book predates the price (another server's, never refreshed by time)
    ingest unpriced events in small batches from several threads, a quota service commits
    some, while the price is added: afterwards every event is priced at its exact cost, and
    every counter is what a recount makes of the events (nothing counted twice or missed)."""
    customers = [f"c{i}" for i in range(4)]
    world = make_world(engine, customers=customers)
    world.at(datetime(2026, 10, 20, tzinfo=UTC))
    stale = [Ledger(engine, CATALOG, clock=lambda: world.now) for _ in range(3)]
    for ledger in stale:
        ledger.costs.ttl = 10**9  # only the in-transaction check can tell them about the price
    quota = Quota(engine, CATALOG, stale[0], clock=lambda: world.now)
    stop = threading.Event()
    errors: list[BaseException] = []
    sent: dict[str, int] = {}  # event id -> input tokens

    def ingest(n: int, ledger: Ledger) -> None:
        i = 0
        try:
            while not stop.is_set() or i < 30:
                batch = [call(f"t{n}-{i}-{k}", f"2026-10-{6 + k % 3:02d}T10:00:{k:02d}Z", customer=customers[k % 4],
                              input_tokens=1000 * (k + 1), output_tokens=7) for k in range(8)]
                for e in batch:
                    sent[e["id"]] = e["properties"]["input_tokens"]
                assert ledger.record(batch).accepted == 8
                i += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def commits() -> None:
        i = 0
        try:
            while not stop.is_set() or i < 10:
                r = quota.reserve(customers[i % 4], "calls", model="nova-9")
                eid = f"q-{i}"
                sent[eid] = 5000
                answer = quota.commit(r.id, {"id": eid, "properties": {"input_tokens": 5000, "output_tokens": 7}})
                assert answer["event"] == "accepted"
                i += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=ingest, args=(n, ledger)) for n, ledger in enumerate(stale)]
    threads.append(threading.Thread(target=commits))
    for t in threads:
        t.start()
    try:
        import time

        time.sleep(0.5)
        added = add_prices(engine, CATALOG, [NOVA], origin="nova.yaml")
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
        quota.close()
    assert not errors, errors
    assert added.events > 0  # some events were stored unpriced before the price arrived ...
    rows = event_rows(engine)
    assert len(rows) == len(sent) > added.events  # ... and some after it
    for event_id, (cost, unpriced, _unmetered, _props) in rows.items():
        assert unpriced is None, event_id  # never neither
        assert cost == sent[event_id] * 2_000_000 + 7 * 10_000_000, event_id  # never both (nor half)
    totals = counter_rows(engine)
    for c in customers:
        want = sum(cost for e, (cost, *_rest) in rows.items()
                   if (e.startswith("q-") and customers[int(e[2:]) % 4] == c)
                   or (e.startswith("t") and customers[int(e.rsplit("-", 1)[1]) % 4] == c))
        assert sum(v[3] for (cc, m, _s), v in totals.items() if cc == c and m == "calls") == want
    assert_counters_are_what_a_recount_makes(engine)


def test_two_recosts_at_once_price_each_event_once(engine, monkeypatch):
    """Two re-costs of the same events at once (two `costs add` of one file on two machines):
    each event is priced by one of them, the counters move once."""
    import billing.ledger.recost as recost_module
    from billing.costs import CostBook

    monkeypatch.setattr(recost_module, "PAGE", 25)  # many small transactions, interleaved
    customers = ["a", "b", "c"]
    world = make_world(engine, customers=customers)
    world.at(datetime(2026, 10, 20, tzinfo=UTC))
    world.record([call(f"e{i}", f"2026-10-{1 + i % 19:02d}T10:00:00Z", customer=customers[i % 3],
                       input_tokens=1000 + i, output_tokens=3) for i in range(300)])
    book = world.ledger.book.merged(CostBook([NOVA]))
    results, errors = [], []
    barrier = threading.Barrier(2)

    def run(fn) -> None:
        try:
            barrier.wait(10)
            results.append(fn())
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(lambda: add_prices(engine, CATALOG, [NOVA], origin="one"),)),
               threading.Thread(target=run, args=(lambda: recost(engine, CATALOG, book=book),))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sum(r.events for r in results) == 300
    rows = event_rows(engine)
    assert all(u is None and c == (1000 + int(e[1:])) * 2_000_000 + 3 * 10_000_000
               for e, (c, u, _m, _p) in rows.items())
    calls = sum(v[3] for (_c, m, _s), v in counter_rows(engine).items() if m == "calls")
    assert calls == sum(c for c, *_ in rows.values())
    assert_counters_are_what_a_recount_makes(engine)
