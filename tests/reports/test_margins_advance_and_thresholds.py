"""Margins over a period billed in part before it closes: advance fees invoiced when the
period starts and threshold invoices do not make it *invoiced* (it is rated to date, fees
in full); once closed, every line billing it counts (advance, threshold and closing lines)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from billing.reports.margins import margin_report
from tests.support.db import World, shipped_catalog


def d(month: int, day: int) -> datetime:
    return datetime(2026, month, day, tzinfo=UTC)


def test_an_open_period_with_advance_and_threshold_invoices_is_rated_to_date(engine):
    world = World(engine, shipped_catalog(), d(10, 1))
    for cid, plan in (("team", "team-advance"), ("api", "api-threshold")):
        world.accounts.create_customer(cid, now=world.now)
        world.accounts.subscribe(cid, plan, at=world.now, seats=5)
    world.at(d(10, 11))
    world.record([*({"id": f"r{i}", "customer": "team", "type": "assistant.request",
                     "timestamp": d(10, 1 + i % 9).isoformat(), "properties": {}} for i in range(600)),
                  *({"id": f"c{i}", "customer": "api", "type": "llm.call", "timestamp": d(10, 2 + i).isoformat(),
                     "properties": {"model": "claude-sonnet-4-5", "input_tokens": 1_000_000,
                                    "output_tokens": 200_000}} for i in range(4))])
    assert len(world.invoicing.close(d(10, 10)).invoices) == 2  # team's opening (170.00), api's threshold (24.00)

    def revenue(as_of):
        return {c.customer: (c.revenue, c.source) for c in margin_report(engine, world.catalog, "2026-10",
                                                                           as_of=as_of).customers}

    # team: 170.00 of fees + 100 requests past the 500 included, 5.00; api: 4 calls, 24.00
    assert revenue(d(10, 11)) == {"team": (Decimal("175.00"), "rated"), "api": (Decimal("24.00"), "rated")}
    world.at(d(11, 1))
    world.invoicing.close(world.now)
    assert revenue(d(11, 1)) == {"team": (Decimal("175.00"), "invoiced"), "api": (Decimal("24.00"), "invoiced")}
