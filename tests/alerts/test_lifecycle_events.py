"""Lifecycle webhooks are queued in the transaction of the change, once per change:
subscription.created / updated (seats, plan) / canceled, invoice.finalized and
credit_note.created by the close, invoice.paid and invoice.voided by the lifecycle; and a
change that fails queues nothing (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

import pytest

from billing.alerts.outbox import Outbox
from billing.errors import BillingError
from tests.support.db import World, invoicing_catalog

CATALOG = invoicing_catalog()
_ids = itertools.count(1)


def d(month: int, day: int) -> datetime:
    return datetime(2026, month, day, tzinfo=UTC)


def ev(customer: str, ts: datetime, etype: str, **props) -> dict:
    return {"id": f"e{next(_ids)}", "customer": customer, "type": etype, "timestamp": ts.isoformat(),
            "properties": props}


def hooks(engine) -> list[tuple[str, str, dict]]:
    return [(r["type"], r["dedupe_id"], json.loads(r["payload"])) for r in Outbox(engine).rows()]


def test_lifecycle_events_once_each_in_the_change_transaction(engine):
    world = World(engine, CATALOG, d(10, 1))
    acc = world.accounts
    acc.create_customer("r", now=d(10, 1))
    sub = acc.subscribe("r", "support-resolutions", at=d(10, 1))
    outcome = {"outcome": "resolution"}
    world.at(d(10, 30))
    world.record([ev("r", d(10, 2), "outcome", outcome_id="o1", **outcome),
                  ev("r", d(10, 28), "outcome", outcome_id="o2", **outcome)])
    world.at(d(11, 1))
    (october_id,) = world.invoicing.close(d(11, 1)).invoices
    assert world.invoicing.close(d(11, 1)).invoices == []  # a repeated close: nothing new
    world.at(d(11, 3))
    world.record([ev("r", d(11, 3), "outcome.reopened", outcome_id="o2")])
    world.at(d(11, 4))
    (note_id,) = world.invoicing.close(d(11, 4)).credit_notes
    world.invoicing.mark_paid(october_id, d(11, 5))
    world.invoicing.mark_paid(october_id, d(11, 5))  # idempotent: no second invoice.paid
    with pytest.raises(BillingError):
        world.invoicing.void(october_id, d(11, 6))  # paid: cannot void, and nothing queued
    acc.change_seats("r", 3, at=d(11, 10))
    acc.cancel("r", at=d(11, 20))

    acc.create_customer("s", now=d(10, 1))
    acc.subscribe("s", "support-resolutions", at=d(10, 1))
    acc.change_plan("s", "support-resolutions", at=d(11, 15))
    world.at(d(12, 1))
    november = [i for i in world.invoicing.close(d(12, 1)).invoices]
    world.invoicing.void(november[0], d(12, 2))

    got = hooks(engine)
    types = [t for t, _, _ in got]
    assert len({m for _, m, _ in got}) == len(got)  # every message once
    assert types.count("subscription.created") == 2 and types.count("subscription.canceled") == 1
    assert types.count("subscription.updated") == 2  # r's seats, s's plan
    assert types.count("invoice.paid") == 1 and types.count("invoice.voided") == 1
    assert types.count("credit_note.created") == 1
    assert types.count("invoice.finalized") == 1 + len(november)
    by_id = {m: body for _, m, body in got}
    created = by_id[f"subscription.created:{sub.id}"]
    assert created["customer"] == "r" and created["data"]["subscription"]["plan"]["id"] == "support-resolutions"
    assert created["timestamp"] == "2026-10-01T00:00:00Z" and created["data"]["seats"] == 1
    final = by_id[f"invoice.finalized:{october_id}"]["data"]["invoice"]
    assert (final["status"], final["number"], final["period"]["start"]) == ("finalized", "INV-000001",
                                                                           "2026-10-01T00:00:00Z")
    assert final["total"] == "0" or final["total"].replace(".", "").isdigit()
    note = by_id[f"credit_note.created:{note_id}"]["data"]["credit_note"]
    assert note["corrects_invoice_id"] == october_id and note["total"].startswith("-")
    assert by_id[f"invoice.paid:{october_id}"]["data"]["invoice"]["status"] == "paid"
    assert by_id[f"invoice.voided:{november[0]}"]["data"]["invoice"]["status"] == "void"
    seats = [b for t, _, b in got if t == "subscription.updated" and b["data"]["change"] == "seats"]
    assert seats[0]["data"]["seats"] == 3
    plan = [b for t, _, b in got if t == "subscription.updated" and b["data"]["change"] == "plan"][0]
    assert plan["customer"] == "s" and plan["data"]["subscription"]["previous_id"] is not None
    assert by_id[f"subscription.canceled:{sub.id}"]["data"]["subscription"]["ended_at"] == "2026-11-20T00:00:00Z"
