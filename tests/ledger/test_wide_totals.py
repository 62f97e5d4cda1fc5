"""Issue 11: totals past 2^63. Twelve events of the documented per-event maximum (10^12
tokens, $1,000,000) for one customer, meter and month, through every door into the ledger
(``Ledger.record`` one by one and in one batch, the HTTP batch, ``billing events import``,
quota reserve + commit), on SQLite and PostgreSQL: every event is accepted (neighbours
too), every counter and task total stays an exact integer (12 x 10^18 micro-units and
picodollars), live holds past 2^63 are summed exactly, ``billing db recount`` and the SQL
aggregation of the events agree, and the close bills the exact quantity and cost."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.support.db import World, counter_rows, task_usage_rows
from tests.support.wide_totals import CATALOG, INGEST_AT, MAX_COST, MAX_TOKENS, NOV, NOV_US, OCT, OCT_US, PLAN, big_event

N = 12
E18 = 10**18


def small_event(i: int) -> dict:  # a neighbour in the same batches
    return {**big_event(i, "small"), "properties": {"input_tokens": 5, "output_tokens": 1, "cost": "0.01"}}


@pytest.fixture
def world(engine):
    w = World(engine, CATALOG, INGEST_AT)
    for customer in ("big", "small"):
        w.accounts.create_customer(customer, now=OCT)
        w.accounts.subscribe(customer, "big-usage", at=OCT)
    return w


# ------------------------------------------------------------------ the doors

def via_ledger_one_by_one(world, **_):
    for i in range(N):  # each its own transaction: the stored counter passes 2^63 in SQL
        assert world.record([big_event(i), small_event(i)]).accepted == 2


def via_ledger_batch(world, **_):
    result = world.record([e for i in range(N) for e in (big_event(i), small_event(i))])
    assert result.accepted == 2 * N, result.to_json()  # one delta past 2^63 in one statement


def via_http_batch(world, **_):
    from billing.api.app import create_app
    from billing.api.auth import create_key

    client = TestClient(create_app(world.engine, CATALOG, clock=lambda: INGEST_AT, context_ttl=0, key_cache_ttl=0))
    headers = {"Authorization": f"Bearer {create_key(world.engine, 'ingest')[1]}"}
    for part in (range(0, 9), range(9, N)):  # the second batch takes the counters past 2^63
        body = {"events": [e for i in part for e in (big_event(i), small_event(i))]}
        r = client.post("/v1/events", json=body, headers=headers)
        assert r.status_code == 200, r.text
        assert [x["status"] for x in r.json()["results"]] == ["accepted"] * len(body["events"])


def via_cli_import(world, db_url, tmp_path, monkeypatch, **_):
    for i, part in enumerate((range(0, 6), range(6, N))):
        path = tmp_path / f"events{i}.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for j in part for e in (big_event(j), small_event(j))))
        out = cli(db_url, tmp_path, monkeypatch, "events", "import", str(path), "--batch", "1" if i == 0 else "1000",
                  "--json")
        assert out["accepted"] == 2 * len(part), out


def via_quota_commits(world, **_):
    from billing.reservations.holds import Quota

    quota = Quota(world.engine, CATALOG, clock=lambda: INGEST_AT)
    try:
        holds = [quota.reserve("big", "tokens", MAX_TOKENS, cost=MAX_COST, task="t1") for _ in range(N)]
        assert all(h.granted for h in holds)
        # twelve live holds of 10^18 micro-units and picodollars: their sum passes 2^63
        assert quota.check("big", "tokens", MAX_TOKENS).granted
        usage = quota.usage("big")
        assert usage["meters"]["tokens"]["held"] == str(N * MAX_TOKENS)
        for i, hold in enumerate(holds):
            event = big_event(i)
            del event["customer"]
            assert quota.commit(hold.id, event)["event"] == "accepted"
            small = quota.reserve("small", "tokens", 5)
            assert quota.commit(small.id, small_event(i))["event"] == "accepted"
        assert quota.usage("big")["meters"]["tokens"] == {"used": str(N * MAX_TOKENS), "held": "0", "events": N,
                                                          "provider_cost": str(N * MAX_COST)}
    finally:
        quota.close()


def cli(db_url, tmp_path, monkeypatch, *args):
    from billing.cli import app
    from billing.config import get_settings
    from billing.store.db import engine_for

    plans = tmp_path / "plans"
    plans.mkdir(exist_ok=True)
    (plans / "big-usage.yaml").write_text(PLAN)
    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(plans))
    get_settings.cache_clear()
    engine_for.cache_clear()
    try:
        out = CliRunner().invoke(app, list(args))
        assert out.exit_code == 0, (args, out.output, out.exception)
        return json.loads(out.output)
    finally:
        engine_for(db_url).dispose()
        get_settings.cache_clear()
        engine_for.cache_clear()


DOORS = {"ledger-one-by-one": via_ledger_one_by_one, "ledger-batch": via_ledger_batch, "http": via_http_batch,
         "cli-import": via_cli_import, "quota-commit": via_quota_commits}


@pytest.mark.parametrize("door", DOORS)
def test_twelve_maximum_events_stay_exact_through_every_door(door, world, db_url, tmp_path, monkeypatch):
    DOORS[door](world, db_url=db_url, tmp_path=tmp_path, monkeypatch=monkeypatch)
    engine = world.engine
    expected = {("big", "tokens", OCT_US): (NOV_US, N * E18, N, N * E18),
                ("big", "peak", OCT_US): (NOV_US, E18, N, N * E18),
                ("big", "calls", OCT_US): (NOV_US, N * 10**6, N, N * E18),
                ("big", "*", OCT_US): (NOV_US, 0, N, N * E18)}
    counters = counter_rows(engine)  # (every part an int, each low part under 10^18)
    assert {k: v for k, v in counters.items() if k[0] == "big"} == expected
    assert counters[("small", "tokens", OCT_US)] == (NOV_US, N * 5 * 10**6, N, N * 10**10)
    if door in ("http", "quota-commit"):  # these doors count agent task usage
        assert task_usage_rows(engine)[("big", "t1")] == (N, N * (2 * MAX_TOKENS) - sum(range(N)), N * E18)

    # the SQL aggregation of the events says the same (exact sums past 2^63)
    from billing.store.aggregate_sql import aggregate_window, max_event_id

    with engine.connect() as conn:
        usage, costs = aggregate_window(conn, CATALOG.get("big-usage", 1), ["big"], OCT_US, NOV_US,
                                        max_event_id(conn))
    assert (usage["big"]["tokens"].units, usage["big"]["peak"].units) == (N * MAX_TOKENS, MAX_TOKENS)
    assert usage["big"]["tokens"].cost == costs["big"] == N * MAX_COST

    # a recount rebuilds the very same counters
    if door == "cli-import":
        assert cli(db_url, tmp_path, monkeypatch, "db", "recount", "--json")["counters"] == len(counters)
    else:
        from billing.ledger.recount import recount_all

        with engine.begin() as conn:
            recount_all(conn, CATALOG)
    assert counter_rows(engine) == counters

    # the close bills the exact quantity and cost (rated from the counters)
    from billing.invoicing.service import invoice_json

    world.at(NOV)
    closed = world.invoicing.close(NOV)
    assert len(closed.invoices) == 2 and closed.rated_from_counters == 2
    inv = invoice_json(*world.invoicing.get(closed.invoices[0]))
    assert inv["customer"] == "big" and inv["provider_cost"] == str(N * MAX_COST)
    lines = {ln["key"]: ln for ln in inv["lines"]}
    assert (lines["tokens"]["quantity"], Decimal(lines["tokens"]["amount"])) == (str(N * MAX_TOKENS), N * 10**6)
    assert Decimal(lines["inference"]["amount"]) == N * MAX_COST * Decimal("1.25")
    assert world.invoicing.close(NOV).invoices == []
