"""A close as of an instant after the clock would finalize periods that have not ended (and
finalized invoices never change): the service refuses it unless allowed, and
``billing invoice close --as-of`` exits 2 without ``--allow-future``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from billing.cli import app
from billing.config import get_settings
from billing.errors import BillingError, ErrorCode
from billing.invoicing.service import Invoicing
from billing.store.db import engine_for
from tests.support.close_scenario import CATALOG, d, write_plans
from tests.support.db import World, documents


@pytest.fixture
def world(engine):
    world = World(engine, CATALOG, d(10, 1))
    world.accounts.create_customer("a", now=d(10, 1))
    world.accounts.subscribe("a", "seats-requests", at=d(10, 1))
    world.at(d(10, 20))
    return world


def test_a_close_after_the_clock_is_refused_and_writes_nothing(world):
    with pytest.raises(BillingError) as err:
        world.invoicing.close(d(11, 1))  # October has not ended by the clock (October 20)
    assert err.value.code == ErrorCode.VALIDATION
    assert "after the clock" in err.value.message and "allow_future" in err.value.message
    assert err.value.details == {"as_of": d(11, 1).isoformat(), "now": d(10, 20).isoformat()}
    assert documents(world.engine) == []


def test_the_future_tolerance_and_allow_future(world):
    world.at(d(11, 1) - timedelta(seconds=300))
    assert len(world.invoicing.close(d(11, 1)).invoices) == 1  # within 300 s: the clocks may differ that much
    strict = Invoicing(world.engine, CATALOG, clock=lambda: world.now, future_tolerance_seconds=0)
    with pytest.raises(BillingError):
        strict.close(d(12, 1))
    world.at(d(11, 5))
    assert len(world.invoicing.close(d(12, 1), allow_future=True).invoices) == 1  # November, finalized early
    assert [doc[1] for doc in documents(world.engine)] == ["INV-000001", "INV-000002"]


def test_cli_refuses_a_future_as_of_without_allow_future(db_url, tmp_path, monkeypatch):
    from billing.cli.context import catalog

    monkeypatch.setenv("BILLING_DATABASE_URL", db_url)
    monkeypatch.setenv("BILLING_PLANS_DIR", str(write_plans(tmp_path / "plans")))
    for cache in (get_settings, engine_for, catalog):  # the CLI keeps them for the process
        cache.cache_clear()
    runner = CliRunner()
    try:
        now = datetime.now(UTC)
        assert runner.invoke(app, ["customers", "create", "a"]).exit_code == 0
        assert runner.invoke(app, ["subscriptions", "create", "a", "seats-requests", "--at",
                                   (now - timedelta(days=1)).isoformat()]).exit_code == 0
        ahead = (now + timedelta(days=60)).isoformat()
        refused = runner.invoke(app, ["invoice", "close", "--as-of", ahead, "--json"])
        assert refused.exit_code == 2, refused.output
        assert "validation_error" in refused.output and "--allow-future" in refused.output
        assert json.loads(runner.invoke(app, ["invoice", "list", "--json"]).output) == []
        allowed = runner.invoke(app, ["invoice", "close", "--as-of", ahead, "--allow-future", "--json"])
        assert allowed.exit_code == 0, allowed.output
        assert len(json.loads(allowed.output)["invoices"]) >= 1
    finally:
        engine_for(db_url).dispose()
        for cache in (get_settings, engine_for, catalog):
            cache.cache_clear()
