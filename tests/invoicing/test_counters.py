"""A close rates a period from the running counters only where they equal its events, on
SQLite and PostgreSQL.

Random ledgers (several customers and plans: count / sum / max meters, filters, included
units, credits, a minimum commitment, anniversary periods in another timezone, and plans
that must fall back to the events: disputes; subscriptions that start or end in the past,
plan changes, cancellations, seat changes, values with more than 6 decimals, late events
after a close) are driven through two databases with the same operations: one closes from
the counters, the other only from the events (``use_counters=False``). After every step:

(1) for every subscription period the counters are trusted for (``Invoicing.counts_for``),
    the ``*`` counter is the period's event count, and where ``counter_usage`` rates it,
    its meters and provider cost equal the SQL aggregation of the events;
(2) both databases hold the same documents (numbers, lines, amounts, adjustments, credit
    notes), so which path rated a period never shows;
(3) the counters kept by ingestion and by subscription changes equal counters rebuilt from
    scratch (``recount_all``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from billing.catalog import Catalog, parse_plan_text
from billing.errors import BillingError
from billing.invoicing import repository as repo
from billing.invoicing.service import Invoicing, cycle_for
from billing.invoicing.usage import counter_usage, period_events, plan_is_countable
from billing.store.aggregate_sql import aggregate_window
from billing.ledger.recount import recount_all
from billing.store.types import to_us
from tests.support.db import (
    BACKENDS, World, counter_rows, documents, engine_for_url, invoicing_catalog, postgres_database,
    postgres_server_url, reset_database, sqlite_database)

MIX_YAML = """
plan: counted-mix
version: 1
name: count, sum and max meters on anniversary periods (tests)
effective_from: 2026-01-01T00:00:00Z
currency: USD
billing: {interval: month, anchor: anniversary}
fees:
  - {type: flat, key: base, name: Base, amount: "20.00"}
meters:
  - {key: peak_gpus, event_type: agent.step, aggregation: max, property: gpus}
  - {key: units, event_type: agent.step, aggregation: sum, property: units}
  - {key: chat_output, event_type: llm.call, aggregation: sum, property: output_tokens,
     filter: {feature: support-chat}}
  - {key: requests, event_type: request, aggregation: count}
charges:
  - {key: peak_gpus, meter: peak_gpus, price: {model: per_unit, unit_price: "3.00"}}
  - key: units
    meter: units
    price: {model: graduated, tiers: [{up_to: 10, unit_price: "0.50"}, {unit_price: "0.25"}]}
  - {key: chat_output, meter: chat_output, included: {per_seat: 1000},
     price: {model: per_unit, unit_price: "0.0001"}}
  - {key: requests, meter: requests, price: {model: package, package_size: 3, package_price: "1.00"}}
"""

CATALOG = Catalog([*invoicing_catalog().all(), parse_plan_text(MIX_YAML, "counted-mix.yaml")])
PLANS = ["seats-requests", "team", "counted-mix", "support-resolutions", "token-api", "support-chatbot"]
CUSTOMERS = [("c0", "UTC"), ("c1", "Europe/Paris"), ("c2", "UTC")]
START = datetime(2026, 9, 1, tzinfo=UTC)
LAST = datetime(2027, 1, 10, tzinfo=UTC)


@pytest.fixture(scope="module", params=BACKENDS)
def twin_urls(request, tmp_path_factory):
    """Two databases of one backend, emptied before each example."""
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("twins")
        with sqlite_database(folder) as a, sqlite_database(folder) as b:
            yield a, b
        return
    server = postgres_server_url()
    with postgres_database(server) as a, postgres_database(server) as b:
        yield a, b


# ------------------------------------------------------------------------ operations

amounts = st.one_of(st.integers(0, 5000), st.decimals(0, 50, places=2).map(float),
                    st.decimals(0, 5, places=7).map(str))  # 7 decimals: the period's counters are not exact


@st.composite
def event_body(draw):
    kind = draw(st.sampled_from(["llm", "llm", "request", "step", "outcome", "dispute"]))
    if kind == "llm":
        props = {"model": draw(st.sampled_from(["claude-sonnet-4-5", "gpt-4o"])),
                 "input_tokens": draw(st.integers(0, 5000)), "output_tokens": draw(st.integers(0, 2000))}
        if draw(st.booleans()):
            props["feature"] = draw(st.sampled_from(["support-chat", "search"]))
        return "llm.call", props
    if kind == "request":
        return "request", {}
    if kind == "step":
        props = {}
        if draw(st.booleans()):
            props["gpus"] = draw(st.one_of(st.integers(0, 8), st.sampled_from([0.5, "1.25"])))
        if draw(st.booleans()):
            props["units"] = draw(amounts)
        return "agent.step", props
    if kind == "outcome":
        return "outcome", {"outcome": "resolution", "outcome_id": draw(st.sampled_from(["o1", "o2", "o3"]))}
    return "outcome.disputed", {"outcome_id": draw(st.sampled_from(["o1", "o2", "o3"]))}


customer_index = st.integers(0, len(CUSTOMERS) - 1)
when = st.one_of(st.just("now"), st.just("boundary"), st.integers(0, 1000))  # an int: a past instant
operations = st.lists(st.one_of(
    st.tuples(st.just("ingest"), customer_index, st.lists(st.tuples(st.integers(0, 1000), event_body()),
                                                          min_size=1, max_size=8)),
    st.tuples(st.just("advance"), st.sampled_from([5, 30, 24 * 6, 24 * 13, 24 * 21])),
    st.tuples(st.just("close")),
    st.tuples(st.just("seats"), customer_index, st.integers(0, 4)),
    st.tuples(st.just("plan"), customer_index, st.sampled_from(PLANS), when),
    st.tuples(st.just("cancel"), customer_index, when),
    st.tuples(st.just("subscribe"), customer_index, st.sampled_from(PLANS), when),
), min_size=4, max_size=16)


class Twins:
    """The same operations on a database closed from counters (``a``) and one closed
    from events only (``b``)."""

    def __init__(self, engines):
        self.a, self.b = (World(e, CATALOG, START) for e in engines)
        self.b.invoicing = Invoicing(self.b.engine, CATALOG, clock=lambda: self.b.now, use_counters=False)
        self.worlds = (self.a, self.b)
        self.n = 0

    def both(self, fn):
        """Run ``fn(world)`` on both; they must succeed or fail alike."""
        outcomes = []
        for world in self.worlds:
            try:
                outcomes.append(("ok", fn(world)))
            except BillingError as exc:
                outcomes.append(("error", exc.code))
        assert outcomes[0][0] == outcomes[1][0], outcomes
        return outcomes[0][1] if outcomes[0][0] == "ok" else None

    def at(self, when):
        for world in self.worlds:
            world.at(when)

    def instant(self, cid: str, choice) -> datetime:
        now = self.a.now
        if choice == "now":
            return now
        try:
            sub = self.a.accounts.current_subscription(cid, now)
        except BillingError:
            return now
        if choice == "boundary":
            plan = CATALOG.get(sub.plan_id, sub.plan_version)
            return cycle_for(sub, plan, dict(CUSTOMERS)[cid]).period_containing(now).start
        return sub.started_at + (now - sub.started_at) * choice // 1000

    def apply(self, op) -> None:
        name, *args = op
        now = self.a.now
        if name == "ingest":
            cid, bodies = CUSTOMERS[args[0]][0], args[1]
            events = []
            for fraction, (etype, props) in bodies:
                self.n += 1
                ts = START + (now - START) * fraction // 1000
                events.append({"id": f"e{self.n}", "customer": cid, "type": etype,
                               "timestamp": ts.isoformat(), "properties": props})
            results = [w.record(events).to_json() for w in self.worlds]
            assert results[0] == results[1]
        elif name == "advance":
            self.at(min(LAST, now + timedelta(hours=args[0])))
        elif name == "close":
            results = [w.invoicing.close(now) for w in self.worlds]
            assert [(r.invoices, r.credit_notes, r.adjusted_periods, r.watermark) for r in results[:1]] == \
                   [(r.invoices, r.credit_notes, r.adjusted_periods, r.watermark) for r in results[1:]]
            assert results[1].rated_from_counters == 0
        elif name == "seats":
            cid = CUSTOMERS[args[0]][0]
            self.both(lambda w: w.accounts.change_seats(cid, args[1], at=now))
        elif name == "plan":
            cid = CUSTOMERS[args[0]][0]
            at = self.instant(cid, args[2])
            self.both(lambda w: w.accounts.change_plan(cid, args[1], at=at))
        elif name == "cancel":
            cid = CUSTOMERS[args[0]][0]
            at = self.instant(cid, args[1])
            self.both(lambda w: w.accounts.cancel(cid, at=at))
        elif name == "subscribe":
            cid = CUSTOMERS[args[0]][0]
            at = now if args[2] == "now" else START + (now - START) * (args[2] if args[2] != "boundary" else 0) // 1000
            self.both(lambda w: w.accounts.subscribe(cid, args[1], at=at))


# ------------------------------------------------------------------------ invariants

def counters_match_events(world: World) -> tuple[int, int]:
    """(1) for every subscription period so far; returns (periods checked, rated from counters)."""
    invoicing, engine = world.invoicing, world.engine
    checked = rated = 0
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("LOCK TABLE usage_event IN SHARE MODE")
        everyone = repo.all_subscriptions(conn)
        zones = repo.customer_timezones(conn, {s.customer_id for s in everyone})
        windows = []
        for sub in everyone:
            plan = CATALOG.get(sub.plan_id, sub.plan_version)
            cycle = cycle_for(sub, plan, zones[sub.customer_id])
            period = cycle.period_containing(sub.started_at)
            while period.start < world.now and (sub.ended_at is None or period.start < sub.ended_at):
                start = max(period.start, sub.started_at)
                end = min(period.end, sub.ended_at) if sub.ended_at else period.end
                windows.append((sub, plan, period, start, end))
                period = cycle.next_period(period)
        keys = {(sub.customer_id, to_us(period.start)) for sub, _, period, _, _ in windows}
        cover = repo.coverage(everyone)
        snap = repo.read_snapshot(conn, keys, set(), cover)
        for sub, plan, period, start, end in windows:
            if start >= end or not invoicing.counts_for(sub, plan, period, start, end, snap, cover, zones):
                continue
            checked += 1
            rows = snap.counters.get((sub.customer_id, to_us(period.start)))
            (count,) = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM usage_event WHERE customer_id = %s AND ts >= %s AND ts < %s AND id <= %s"
                .replace("%s", "%s" if conn.dialect.name == "postgresql" else "?"),
                (sub.customer_id, to_us(start), to_us(end), snap.watermark)).one()
            assert period_events(rows) == count, (sub, period)
            found = counter_usage(plan, period, rows) if plan_is_countable(plan) else None
            if found is None:
                continue
            rated += 1
            usage, costs = aggregate_window(conn, plan, [sub.customer_id], to_us(start), to_us(end), snap.watermark)
            assert found.usage == usage[sub.customer_id], (plan.ref, period)
            assert found.provider_cost == costs.get(sub.customer_id), (plan.ref, period)
    return checked, rated


def recount_changes_nothing(world: World) -> None:
    before = counter_rows(world.engine)
    with world.engine.begin() as conn:
        recount_all(conn, CATALOG)
    assert counter_rows(world.engine) == before


def _scenario(twin_urls, ops, plans, starts, seen: list[int]) -> None:
    for url in twin_urls:
        reset_database(url)
    with engine_for_url(twin_urls[0]) as ea, engine_for_url(twin_urls[1]) as eb:
        twins = Twins((ea, eb))
        for (cid, tz), plan, hours in zip(CUSTOMERS, plans, starts):
            at = START + timedelta(hours=hours)
            twins.both(lambda w: w.accounts.create_customer(cid, timezone=tz, now=START))
            twins.both(lambda w: w.accounts.subscribe(cid, plan, at=at, seats=2))
        twins.at(START + timedelta(days=3))
        for op in [*ops, ("advance", 24 * 21), ("close",)]:
            twins.apply(op)
            checked, rated = counters_match_events(twins.a)
            seen[0] += checked
            seen[1] += rated
            assert documents(ea) == documents(eb)
        recount_changes_nothing(twins.a)


@pytest.mark.slow
def test_counters_and_events_give_the_same_invoices(twin_urls):
    examples = 6 if twin_urls[0].startswith("postgresql") else 25
    seen = [0, 0]  # periods the counters were trusted for, and rated from, over all examples

    def scenario(ops, plans, starts):
        _scenario(twin_urls, ops, plans, starts, seen)

    run = settings(max_examples=examples, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                          HealthCheck.data_too_large])(
        given(ops=operations, plans=st.lists(st.sampled_from([*PLANS, "counted-mix"]), min_size=3, max_size=3),
              starts=st.lists(st.integers(0, 45 * 24), min_size=3, max_size=3))(scenario))
    run()
    assert seen[1] > 0, seen  # the counters path was taken


def test_full_periods_of_plain_plans_are_rated_from_counters(twin_urls):
    """The counters path is taken where it should be (and only there)."""
    for url in twin_urls:
        reset_database(url)
    with engine_for_url(twin_urls[0]) as engine:
        world = World(engine, CATALOG, START)
        for cid, plan, at in (("full", "team", START), ("partial", "team", START + timedelta(days=10)),
                              ("disputes", "support-resolutions", START), ("mixed", "counted-mix", START)):
            world.accounts.create_customer(cid, now=START)
            world.accounts.subscribe(cid, plan, at=at)
        world.at(START + timedelta(days=20))
        events = [{"id": f"{cid}{i}", "customer": cid, "type": etype, "timestamp": (START + timedelta(days=i)).isoformat(),
                   "properties": props}
                  for cid, etype, props in (("full", "llm.call", {"model": "gpt-4o", "input_tokens": 10, "output_tokens": 5}),
                                            ("partial", "llm.call", {"model": "gpt-4o", "input_tokens": 10}),
                                            ("disputes", "outcome", {"outcome": "resolution", "outcome_id": "x"}),
                                            ("mixed", "agent.step", {"gpus": 2, "units": 1.5}))
                  for i in range(12, 15)]
        assert world.record(events).accepted == len(events)
        world.at(datetime(2026, 10, 1, tzinfo=UTC))
        result = world.invoicing.close(world.now)
        assert len(result.invoices) == 4
        assert result.rated_from_counters == 2  # "full" and "mixed"; a partial period and disputes need events
        assert counters_match_events(world) == (2, 2)  # checked, rated: "full" and "mixed"


def test_values_with_more_than_six_decimals_are_rated_from_events(twin_urls):
    """Counters hold micro-units: a period with a value they had to round (7 decimals, a
    tie included) is rated from its events, and both databases bill the same."""
    for url in twin_urls:
        reset_database(url)
    with engine_for_url(twin_urls[0]) as ea, engine_for_url(twin_urls[1]) as eb:
        twins = Twins((ea, eb))
        for cid in ("exact", "rounded"):
            twins.both(lambda w: w.accounts.create_customer(cid, now=START))
            twins.both(lambda w: w.accounts.subscribe(cid, "counted-mix", at=START))
        twins.at(START + timedelta(days=20))
        for cid, units in (("exact", ["0.000001", 2.5, "7"]), ("rounded", ["0.0000005", "1.0000015", 3])):
            events = [{"id": f"{cid}{i}", "customer": cid, "type": "agent.step",
                       "timestamp": (START + timedelta(days=i + 1)).isoformat(), "properties": {"units": u, "gpus": 1}}
                      for i, u in enumerate(units)]
            for world in twins.worlds:
                assert world.record(events).accepted == 3
        twins.at(datetime(2026, 10, 1, tzinfo=UTC))
        result = twins.a.invoicing.close(twins.a.now)
        twins.b.invoicing.close(twins.b.now)
        assert result.rated_from_counters == 1  # "exact" only
        assert documents(ea) == documents(eb)
        (rounded,) = [d for d in documents(ea) if d[4] == "rounded"]
        units = [q for _, kind, key, q, *_ in rounded[10] if key == "units"]
        if ea.dialect.name == "postgresql":  # exact: 0.0000005 + 1.0000015 + 3
            assert units == ["4.000002"]
        else:  # 6-decimal fixed point per event (see ledger.aggregate_sql)
            assert units == ["4.000003"], units
