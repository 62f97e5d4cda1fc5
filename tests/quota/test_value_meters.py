"""The quota reads the value aggregations (latest, min, avg, time-weighted sums: no running
counter) from the events as the close does: the state a decision sees holds, for each such
meter, what the SQL aggregation of the period gives (a time-weighted level held to the end
of the period), on SQLite and PostgreSQL; alerts and decisions match filter operators by
the same rule."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from billing.catalog import Catalog
from billing.ledger.accounts import Accounts
from billing.ledger.ingest import Ledger
from billing.reservations.holds import Quota
from billing.reservations.sql import batch_state_query, make_state, parse_batch_state, run_all, usage_state
from billing.store.aggregate_sql import aggregate_meters, max_event_id
from billing.store.types import to_us
from tests.support.level_plans import levels_plan
from tests.support.quota import NOW, T0, Clock, catalog

CAT = Catalog([*catalog().all(), levels_plan()])


def test_the_quota_state_holds_the_value_aggregations_of_the_close(any_engine):
    accounts = Accounts(any_engine, CAT)
    accounts.create_customer("levels", now=T0 - timedelta(days=40))
    accounts.subscribe("levels", "agg-levels", at=T0 - timedelta(days=40))
    clock = Clock()
    ledger = Ledger(any_engine, CAT, clock=clock)
    steps = [("s0", T0 - timedelta(days=3), {"units": 4, "steps": 9, "tier": "gold", "model": "o3"}),  # carried in
             ("s1", T0 + timedelta(days=1), {"units": "1.5", "steps": 2, "tier": "bronze"}),
             ("s2", T0 + timedelta(days=2), {"units": 6, "steps": 5, "level": 3}),
             ("s3", T0 + timedelta(days=2), {"units": 2, "tier": "silver", "task": "t2"}),  # ties s2: s3 wins
             ("s4", T0 + timedelta(days=5), {"steps": 4, "tier": "gold", "model": "o3"})]
    result = ledger.record([{"id": i, "customer": "levels", "type": "agent.step", "timestamp": t.isoformat(),
                             "properties": p} for i, t, p in steps])
    assert result.accepted == len(steps), result.to_json()
    quota = Quota(any_engine, CAT, clock=clock)
    with quota.conns.read() as conn:
        ctx = quota.context(conn, "levels", NOW)
        state = usage_state(quota.conns, conn, ctx, NOW, None)
    period = ctx.period
    with any_engine.connect() as conn:
        closed = aggregate_meters(conn, ctx.plan, ["levels"], to_us(period.start), to_us(period.end),
                                  max_event_id(conn))["levels"]
    for meter in ("unit_hours", "latest_units", "min_units", "avg_steps"):
        assert (state.usage[meter].units, state.usage[meter].events) == \
               (closed[meter].units, closed[meter].events), meter
    # 4 units from Oct 1 to Oct 2, 1.5 to Oct 3, then s3's 2 (s3 > s2) to the end of October
    assert closed["unit_hours"].units == 4 * 24 + Decimal("1.5") * 24 + 2 * 29 * 24
    assert closed["latest_units"].units == 2 and closed["min_units"].units == 2  # bronze is filtered out
    assert closed["avg_steps"].units == Decimal(6) / 2  # s1, s4 (s2 is level 3)
    # the count meters with filter operators come from the counters: the same rule
    assert state.usage["untiered"].units == closed["untiered"].units == 1  # s2
    assert state.usage["not_gold_units"].units == closed["not_gold_units"].units == 6  # s2: no tier (not), level 3
    assert state.usage["tasked_max"].events == closed["tasked_max"].events == 1
    # several customers' states in one statement (batched checks, the quota writer) read the same
    accounts.create_customer("idle", now=T0)
    accounts.subscribe("idle", "agg-levels", at=T0)
    with quota.conns.read() as conn:
        ctxs = [quota.context(conn, c, NOW) for c in ("idle", "levels")]
        rows = run_all(quota.conns, conn, [batch_state_query(quota.conns.pg, ctxs, to_us(NOW))])[0]
    states = parse_batch_state(rows, ["idle", "levels"])
    batched = make_state(ctxs[1], NOW, *states["levels"], None)
    idle = make_state(ctxs[0], NOW, *states["idle"], None)
    for meter in ("unit_hours", "latest_units", "min_units", "avg_steps"):
        assert batched.usage[meter] == state.usage[meter], meter
        assert idle.usage[meter].units == 0


def test_the_quota_prices_a_dimension_charge_per_value_as_the_invoice_does(any_engine):
    accounts = Accounts(any_engine, CAT)
    accounts.create_customer("dims", now=T0)
    accounts.subscribe("dims", "agg-levels", at=T0)
    clock = Clock()
    steps = [("d1", {"units": 70, "level": 2, "model": "gpt-4o"}), ("d2", {"units": 40, "level": 3, "model": "o3"}),
             ("d3", {"units": 6, "level": "3"}), ("d4", {"units": 25, "level": 2, "model": "gemini-2.5-pro"})]
    result = Ledger(any_engine, CAT, clock=clock).record([
        {"id": i, "customer": "dims", "type": "agent.step", "timestamp": (T0 + timedelta(days=n)).isoformat(),
         "properties": p} for n, (i, p) in enumerate(steps)])
    assert result.accepted == len(steps), result.to_json()
    quota = Quota(any_engine, CAT, clock=clock)
    with quota.conns.read() as conn:
        ctx = quota.context(conn, "dims", NOW)
        state = usage_state(quota.conns, conn, ctx, NOW, None)
    with any_engine.connect() as conn:
        closed = aggregate_meters(conn, ctx.plan, ["dims"], to_us(ctx.period.start), to_us(ctx.period.end),
                                  max_event_id(conn))["dims"]
    assert state.usage["not_gold_units"].groups == closed["not_gold_units"].groups == (
        ("gemini-2.5-pro", 25, 0, 1), ("gpt-4o", 70, 0, 1), ("o3", 40, 0, 1), (None, 6, 0, 1))
    assert state.usage["untiered"].groups == closed["untiered"].groups == (("2", 2, 0, 2), ("3", 2, 0, 2))
    # 100 included: o3 takes 40 (listed first), gpt-4o 60 and bills 10 x 1 = 10; gemini (default:
    # packages of 10 at 2) 3 x 2 = 6; no model: 1 x 2 = 2. 20 more o3 units take 20 more included
    # units, which gpt-4o loses: it bills 30 x 1, 20.00 more (o3 still bills nothing).
    decision = quota.check("dims", "units_by_model", 20, model="o3")
    assert decision.amount == Decimal("20.00")
    unknown = quota.check("dims", "units_by_model", 20)  # no model: the default price (2 more packages)
    assert unknown.amount == Decimal("4.00")
