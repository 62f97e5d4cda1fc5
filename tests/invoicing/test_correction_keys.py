"""Corrections are keyed by what they correct: the original invoice and the correction's
generation (``invoice_correction``), on SQLite and PostgreSQL. The key refuses a second
document for one correction; revision 0008 records the corrections made before it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic.script import ScriptDirectory

from billing.invoicing import repository as invoicing_repo
from billing.store.db import alembic_config, downgrade, upgrade
from tests.support.close_scenario import CATALOG, Events, build, d
from tests.support.db import World


def corrections(engine) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT corrected_invoice_id, generation, document_id FROM invoice_correction "
            "ORDER BY corrected_invoice_id, generation")]


@pytest.fixture
def corrected(engine):
    """The scenario closed as of December 1 (v's credit note, x's adjustment invoice, a's
    adjustment lines on November's invoice), then more late October usage for v closed as
    of January 1 (its second correction: adjustment lines on December's invoice)."""
    world = World(engine, CATALOG, d(10, 1))
    build(world)
    world.invoicing.close(d(12, 1))
    world.at(d(1, 2, year=2027))
    world.record(Events("more")("v", d(10, 8), 20))
    world.invoicing.close(d(1, 1, year=2027))
    return world


def test_each_correction_names_the_invoice_and_generation(corrected):
    engine = corrected.engine
    with engine.connect() as conn:
        docs = {i: (c, kind, key, start) for i, c, kind, key, start in conn.exec_driver_sql(
            "SELECT id, customer_id, kind, dedupe_key, period_start FROM invoice")}
    found = [(docs[o][0], g, docs[n][1], docs[n][2]) for o, g, n in corrections(engine)]
    v, x = (min(i for i, doc in docs.items() if doc[0] == c) for c in "vx")  # their October invoices
    assert sorted(found) == sorted([
        ("v", 1, "credit_note", f"cn:{v}:g1"),  # 100 at $0.70 re-rated as 110 at $0.60
        ("v", 2, "invoice", found_key(docs, "v", d(12, 1))),  # 20 more late: on December's invoice
        ("x", 1, "invoice", f"adj:{x}:g1"),  # the ended subscription's adjustment invoice
        ("a", 1, "invoice", found_key(docs, "a", d(11, 1))),  # on November's invoice
    ])


def found_key(docs: dict, customer: str, start) -> str:
    """The dedupe key of the customer's period invoice starting at ``start``."""
    (key,) = [k for c, kind, k, s in docs.values() if c == customer and k.startswith("inv:") and _same(s, start)]
    return key


def _same(stored, start) -> bool:
    if isinstance(stored, str):
        stored = datetime.fromisoformat(stored).replace(tzinfo=UTC)
    return stored == start


def test_the_key_refuses_a_second_document_for_one_correction(corrected):
    engine = corrected.engine
    original, generation, document = corrections(engine)[0]
    with pytest.raises(Exception, match="invoice_correction") as err, engine.begin() as conn:
        invoicing_repo.insert_corrections(conn, [{"corrected_invoice_id": original, "generation": generation,
                                                  "document_id": document}])
    assert "UNIQUE constraint failed" in str(err.value) or getattr(err.value, "sqlstate", "") == "23505"


def test_revision_0008_records_the_corrections_made_before_it(corrected, db_url):
    engine = corrected.engine
    made = corrections(engine)
    before = ScriptDirectory.from_config(alembic_config(db_url)).get_revision("0008").down_revision
    engine.dispose()
    downgrade(db_url, before)
    upgrade(db_url)
    assert corrections(engine) == made
    world = World(engine, CATALOG, d(1, 2, year=2027))  # the next correction takes the next generation
    world.record(Events("after")("v", d(10, 9), 30))
    world.invoicing.close(d(1, 1, year=2027))
    v_october = made[0][0]
    assert [g for o, g, _ in corrections(engine) if o == v_october] == [1, 2]  # pending: no new invoice to carry it
    world.at(d(2, 2, year=2027))
    world.invoicing.close(d(2, 1, year=2027))
    assert [g for o, g, _ in corrections(engine) if o == v_october] == [1, 2, 3]


class _Conflict(Exception):
    sqlstate = "23505"  # what the driver raises when another close wrote the same correction first


@pytest.mark.parametrize("conflicts", [1, 3])
def test_a_close_that_meets_another_closes_correction_runs_again(engine, monkeypatch, conflicts):
    """The transaction rolled back whole, so the close runs again; a conflict every time
    (3 runs) is a ``conflict`` error, with nothing written."""
    from billing.errors import BillingError, ErrorCode

    world = World(engine, CATALOG, d(10, 1))
    build(world)
    before = len(corrections(engine))
    real, calls = invoicing_repo.insert_corrections, []

    def insert(conn, rows):
        calls.append(len(rows))
        if len(calls) <= conflicts:
            real(conn, rows)  # written, then the transaction fails and rolls it back
            raise _Conflict("duplicate key value violates unique constraint \"invoice_correction_pkey\"")
        real(conn, rows)

    monkeypatch.setattr(invoicing_repo, "insert_corrections", insert)
    if conflicts == 3:
        with pytest.raises(BillingError) as err:
            world.invoicing.close(d(12, 1))
        assert err.value.code == ErrorCode.CONFLICT and "3 times" in err.value.message
        assert len(corrections(engine)) == before and len(calls) == 3
        return
    result = world.invoicing.close(d(12, 1))
    assert calls == [3, 3] and len(result.credit_notes) == 1
    assert len(corrections(engine)) == before + 3
