"""Add-on subscriptions (a base plan plus fees-only add-ons) rated into the base
subscription's one invoice per period, on SQLite and PostgreSQL: prorated from the add-on's
start to its end, re-rated identically for late events, and the add-on plans that cannot be
(metered, another currency or interval, a trial) refused by name."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing.catalog import Catalog, parse_plan_text
from billing.contracts.service import Contracts
from billing.errors import BillingError, ErrorCode
from tests.support.db import World, documents, invoicing_catalog

HEAD = "name: {name}\neffective_from: 2026-01-01T00:00:00Z\n"
SSO = parse_plan_text("plan: sso\n" + HEAD.format(name="SSO add-on") + """fees:
  - {type: flat, key: sso, amount: "31.00"}
  - {type: per_seat, key: audit, name: Audit log, unit_price: "3.00"}
""")
METERED = parse_plan_text("plan: metered-addon\n" + HEAD.format(name="Metered") + """fees:
  - {type: flat, key: f, amount: "1"}
meters:
  - {key: m, event_type: request}
charges:
  - {key: m, meter: m, price: {model: per_unit, unit_price: "1"}}
""")
YEARLY_EUR = parse_plan_text("plan: yearly-eur\n" + HEAD.format(name="Yearly") + """currency: EUR
billing: {interval: year}
trial_days: 7
fees:
  - {type: flat, key: f, amount: "1"}
""")
CATALOG = Catalog([*invoicing_catalog().all(), SSO, METERED, YEARLY_EUR])


def d(month: int, day: int = 1, year: int = 2026) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


@pytest.fixture
def world(engine):
    return World(engine, CATALOG, d(10))


def test_addons_are_lines_of_the_base_invoice(world):
    contracts = Contracts(world.engine, CATALOG)
    world.accounts.create_customer("acme", now=world.now)
    sub = world.accounts.subscribe("acme", "copilot-premium", at=d(10), seats=2).id
    addon = contracts.add_addon(sub, "sso", at=d(10, 17), now=world.now)  # 15 of October's 31 days
    assert contracts.add_addon(sub, "sso", at=d(10, 17), now=world.now).id == addon.id  # a retry adds nothing
    contracts.end_addon(addon.id, at=d(11, 11))  # 10 of November's 30 days
    world.at(d(12, 2))
    world.invoicing.close(d(12, 1))
    docs = [doc for doc in documents(world.engine) if doc[4] == "acme"]
    assert [doc[5] for doc in docs] == [sub, sub]  # one invoice per period, the base subscription's
    october, november = ([(kind, key, amount) for _, kind, key, _, _, amount, _, _ in doc[10]] for doc in docs)
    assert october == [("fee", "subscription", 1000), ("fee", "addon:1:sso", 1500), ("fee", "addon:1:audit", 290),
                       ("usage", "premium_requests", 0)]  # 31 x 15/31; 2 seats x 3 x 15/31 = 2.90
    assert november == [("fee", "subscription", 1000), ("fee", "addon:1:sso", 1033), ("fee", "addon:1:audit", 200),
                        ("usage", "premium_requests", 0)]  # 31 x 10/30 = 10.33; 2 x 3 x 10/30
    shown = contracts.contract(sub)["addons"]
    assert [(a.plan_id, a.started_at, a.ended_at) for a in shown] == [("sso", d(10, 17), d(11, 11))]


@pytest.mark.parametrize("plan, problems", [
    ("metered-addon", ["an add-on plan has fees only; it has meters, charges (the base plan prices usage: override "
                       "it instead)"]),
    ("yearly-eur", ["it bills in EUR, the base in USD", "it bills every year, the base every month",
                    "an add-on has no trial (trial_days must be 0)"]),
])
def test_addon_plans_that_cannot_be_are_refused_by_name(world, plan, problems):
    contracts = Contracts(world.engine, CATALOG)
    world.accounts.create_customer("c", now=world.now)
    sub = world.accounts.subscribe("c", "copilot-premium", at=d(10)).id
    with pytest.raises(BillingError) as err:
        contracts.add_addon(sub, plan, at=d(10, 5), now=world.now)
    assert err.value.code == ErrorCode.CONTRACT_INVALID and err.value.details == problems


def test_late_events_re_rate_the_period_with_its_addons_unchanged(world):
    contracts = Contracts(world.engine, CATALOG)
    world.accounts.create_customer("re", now=world.now)
    sub = world.accounts.subscribe("re", "copilot-premium", at=d(10)).id
    contracts.add_addon(sub, "sso", at=d(10, 17), now=world.now)
    world.at(d(11, 2))
    world.invoicing.close(d(11, 1))
    world.record([{"id": f"late{i}", "customer": "re", "type": "request", "timestamp": d(10, 20).isoformat(),
                   "properties": {"model": "o3"}} for i in range(400)])  # late: 100 past the 300 included
    world.at(d(12, 2))
    world.invoicing.close(d(12, 1))
    october, november = (doc for doc in documents(world.engine) if doc[4] == "re")
    adjustments = [(key, amount) for _, kind, key, _, _, amount, _, _ in november[10] if kind == "adjustment"]
    assert adjustments == [("premium_requests", 400)]  # the usage only: the add-on's fees were billed already
    assert october[8] == 1000 + 1500 + 145  # the invoice as finalized: fee, sso 15/31, 1 seat's audit log


def test_an_addon_never_reaches_an_invoiced_period(world):
    contracts = Contracts(world.engine, CATALOG)
    world.accounts.create_customer("late", now=world.now)
    sub = world.accounts.subscribe("late", "copilot-premium", at=d(10)).id
    addon = contracts.add_addon(sub, "sso", at=d(10, 5), now=world.now)
    world.at(d(11, 2))
    world.invoicing.close(d(11, 1))
    for attempt in (lambda: contracts.add_addon(sub, "sso", at=d(10, 20), now=world.now),
                    lambda: contracts.end_addon(addon.id, at=d(10, 20))):
        with pytest.raises(BillingError) as err:
            attempt()
        assert err.value.code == ErrorCode.PERIOD_INVOICED
