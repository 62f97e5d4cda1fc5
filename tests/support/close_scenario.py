"""A ledger for the concurrent-close and kill -9 tests: customers whose October is closed,
late events that re-rate it (a volume-priced period that re-rates lower, an ended
subscription's late usage, an active one's late usage), November's usage; and what a close
leaves, in a form that compares across databases (numbers instead of ids)."""

from __future__ import annotations

import itertools
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from billing.catalog import Catalog, parse_plan_text
from tests.support.db import SEATS_AND_REQUESTS_YAML, World, documents

VOLUME_YAML = """
plan: volume-requests
version: 1
name: Volume-priced requests (tests)
effective_from: 2026-01-01T00:00:00Z
currency: USD
billing: {interval: month, anchor: calendar}
meters:
  - key: requests
    name: Requests
    event_type: request
    aggregation: count
charges:
  - key: requests
    name: Requests
    meter: requests
    price: {model: volume, tiers: [{up_to: 100, unit_price: "0.70"}, {unit_price: "0.60"}]}
"""
PLAN_FILES = {"seats-requests.yaml": SEATS_AND_REQUESTS_YAML, "volume-requests.yaml": VOLUME_YAML}
CATALOG = Catalog([parse_plan_text(text, name) for name, text in PLAN_FILES.items()])
BILLED = ("finalized", "paid", "void")
ACTIVE = ("a", "c1", "c2", "c3", "c4", "o")


def d(month: int, day: int, hour: int = 0, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


class Events:
    """Request events with ids unique in one ledger."""

    def __init__(self, prefix: str = "e"):
        self.prefix = prefix
        self.ids = itertools.count(1)

    def __call__(self, customer: str, ts: datetime, n: int = 1) -> list[dict]:
        return [{"id": f"{self.prefix}{next(self.ids)}", "customer": customer, "type": "request",
                 "timestamp": ts.isoformat(), "properties": {}} for _ in range(n)]


def build(world: World) -> None:
    """October closed (and re-checked once, quietly); then, on December 2, late October
    events and November's usage, none of it billed yet. A close as of December 1 then
    issues: a credit note of -4.00 for ``v`` (100 requests at $0.70 re-rated as 110 at
    $0.60), an adjustment invoice of +2.00 for ``x`` (its subscription ended on October
    20), November's invoices, ``a``'s carrying +3.00 of October adjustment."""
    ev = Events()
    for cid in ("v", "x", *ACTIVE):
        world.accounts.create_customer(cid, now=d(10, 1))
        world.accounts.subscribe(cid, "volume-requests" if cid == "v" else "seats-requests", at=d(10, 1))
    world.at(d(10, 20))
    world.record([*ev("v", d(10, 5), 100), *ev("x", d(10, 5), 3), *ev("a", d(10, 5), 3), *ev("o", d(10, 9)),
                  *(e for i, c in enumerate(ACTIVE[1:5], 1) for e in ev(c, d(10, 2 + i), i))])
    world.accounts.cancel("x", at=d(10, 20))
    world.at(d(11, 1))
    world.invoicing.close(d(11, 1))
    world.at(d(11, 2))
    world.record(ev("o", d(11, 1, 1)))
    world.invoicing.close(d(11, 2))  # nothing late yet: every October invoice re-checked
    world.at(d(12, 2))
    world.record([*ev("v", d(10, 6), 10), *ev("x", d(10, 10), 2), *ev("a", d(10, 7), 3),
                  *ev("v", d(11, 5), 5), *ev("a", d(11, 6), 2), *ev("o", d(11, 7)),
                  *(e for i, c in enumerate(ACTIVE[1:5], 1) for e in ev(c, d(11, 3 + i), i))])


def open_batches(count: int = 30) -> list[list[dict]]:
    """December's events (an open period as of December 1), a few per batch."""
    ev = Events("dec")
    return [[*ev(ACTIVE[i % len(ACTIVE)], d(12, 1, i % 24)), *ev("o", d(12, 1, (i * 7) % 24))] for i in range(count)]


def late_batches(count: int = 30) -> list[list[dict]]:
    """Events for closed periods and open ones, mixed: October for ``v`` (volume), ``x``
    (ended) and ``a``; November for ``c2``; December for ``o``."""
    ev = Events("late")
    out = []
    for i in range(count):
        out.append([*ev("v", d(10, 1 + i % 30)), *ev("x", d(10, 1 + i % 19)), *ev("a", d(10, 2 + i % 28)),
                    *ev("c2", d(11, 1 + i % 30)), *ev("o", d(12, 1, i % 24))])
    return out


def ledger_documents(engine) -> tuple[list[tuple], list[tuple]]:
    """Every document as (number, kind, status, customer, subscription, period start, end,
    total, number of the invoice it corrects, lines), in number order, and the corrections
    as (corrected invoice's number, generation, document number): no ids, so two databases
    of one backend compare (raw rows: thousands of documents read in a moment)."""
    with engine.connect() as conn:
        docs = conn.exec_driver_sql(
            "SELECT id, number, kind, status, customer_id, subscription_id, period_start, period_end, total_minor, "
            "corrects_invoice_id FROM invoice").all()
        lines: dict[int, list[tuple]] = {}
        for invoice_id, *line in conn.exec_driver_sql(
                "SELECT invoice_id, position, kind, key, quantity, unit_price, amount_minor, service_start, "
                "service_end FROM invoice_line ORDER BY invoice_id, position"):
            lines.setdefault(invoice_id, []).append(tuple(line))
        rows = conn.exec_driver_sql(
            "SELECT corrected_invoice_id, generation, document_id FROM invoice_correction").all()
    number = {doc[0]: doc[1] for doc in docs}
    corrections = sorted((number[o], g, number[n]) for o, g, n in rows)
    return sorted((*doc[1:9], number.get(doc[9]), tuple(lines.get(doc[0], ()))) for doc in docs), corrections


def assert_gap_free(engine) -> None:
    """INV-000001 .. and CN-000001 .. without gaps, and the counters where they stopped."""
    docs = documents(engine)
    with engine.connect() as conn:
        taken = dict(conn.exec_driver_sql("SELECT name, value FROM number_sequence").all())
    for prefix, kind in (("INV", "invoice"), ("CN", "credit_note")):
        numbers = sorted(doc[1] for doc in docs if doc[2] == kind)
        assert numbers == [f"{prefix}-{n:06d}" for n in range(1, len(numbers) + 1)], numbers
        assert taken.get(prefix, 0) == len(numbers)


def net_billed(engine) -> dict[tuple, int]:
    """(customer, service start, service end, line key) -> minor units billed, over every
    billed document (original, adjustments, credit notes)."""
    out: dict[tuple, int] = {}
    for doc in documents(engine):
        if doc[3] not in BILLED:
            continue
        for _, _, key, _, _, amount, start, end in doc[10]:
            out[(doc[4], start, end, key)] = out.get((doc[4], start, end, key), 0) + amount
    return {k: v for k, v in out.items() if v}


def write_plans(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in PLAN_FILES.items():
        (directory / name).write_text(text)
    return directory


def billing_command() -> list[str]:
    """The ``billing`` console script of this interpreter (or the same entry point)."""
    script = Path(sys.executable).with_name("billing")
    if script.exists() or shutil.which("billing"):
        return [str(script) if script.exists() else shutil.which("billing")]
    return [sys.executable, "-c", "from billing.cli import app; app()"]


def cli_env(url: str, plans: Path) -> dict[str, str]:
    return {**os.environ, "BILLING_DATABASE_URL": url, "BILLING_PLANS_DIR": str(plans)}
