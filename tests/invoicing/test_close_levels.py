"""Closing periods of a plan with a time-weighted sum (``vector-store``: GB-hours) on SQLite
and PostgreSQL: a level carries from one period into the next, and a level reported late --
even dated before a billed period -- re-rates every billed period it carries into."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from tests.support.db import World, documents, invoicing_catalog

CATALOG = invoicing_catalog()
_ids = itertools.count(1)


def d(month: int, day: int) -> datetime:
    return datetime(2026, month, day, tzinfo=UTC)


def size(ts: datetime, gb: int) -> dict:
    return {"id": f"s{next(_ids)}", "customer": "v", "type": "storage.size", "timestamp": ts.isoformat(),
            "properties": {"gb": gb}}


def billed(world: World, key: str, start: datetime, end: datetime) -> int:
    return sum(amount for doc in documents(world.engine) if doc[3] in ("finalized", "paid")
               for _, _, k, _, _, amount, s, e in doc[10] if k == key and (s, e) == (start, end))


@pytest.fixture
def world(engine):
    world = World(engine, CATALOG, d(9, 1))
    world.accounts.create_customer("v", now=d(9, 1))
    world.accounts.subscribe("v", "vector-store", at=d(9, 1))
    return world


def test_a_late_level_re_rates_the_periods_it_carries_into(world):
    world.at(d(10, 20))
    assert world.record([size(d(10, 11), 25)]).accepted == 1
    world.at(d(11, 1))
    world.invoicing.close(d(11, 1))
    # September: no level. October: 25 GB from Oct 11 = 12,600 GB-hours, 744 included: 5.93
    assert billed(world, "storage", d(9, 1), d(10, 1)) == 0
    assert billed(world, "storage", d(10, 1), d(11, 1)) == 593

    world.at(d(11, 5))
    assert world.record([size(d(9, 20), 10)]).accepted == 1  # late, and dated before October
    world.at(d(12, 1))
    world.invoicing.close(d(12, 1))
    # September: 10 GB x 264 h = 2,640 - 744 = 1,896 x 0.0005 = 0.948 -> 0.95;
    # October: + 10 GB x 240 h carried in from September: 15,000 - 744 = 14,256 -> 7.13;
    # November: 25 GB all month: 18,000 - 744 = 17,256 -> 8.63
    assert billed(world, "storage", d(9, 1), d(10, 1)) == 95
    assert billed(world, "storage", d(10, 1), d(11, 1)) == 713
    assert billed(world, "storage", d(11, 1), d(12, 1)) == 863
    snapshot = documents(world.engine)
    world.invoicing.close(d(12, 1))
    assert documents(world.engine) == snapshot  # nothing more to carry
