"""One WAL flush per fast-path write with an ``Idempotency-Key`` (``billing.reservations.
durability``): the quota writer commits a batch without waiting for the flush only when
every caller in it promised a durable write of its own before answering, and the
``Idempotency-Key`` layer keeps that promise (the record of the answer, else
``IdempotencyStore.flush``; a flush that fails is a 503, never an answer)."""

from __future__ import annotations

import pytest
import psycopg

from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.reservations.durability import flushed_later
from billing.reservations.types import Op, parse_request
from billing.store.idempotency import IdempotencyStore
from tests.support.quota import T0, Clock
from tests.support.summed import CAT

RESERVE = {"customer": "acme", "meter": "units", "quantity": 10, "ttl_seconds": 600}


class Api:
    def __init__(self, engine):
        self.key = create_key(engine, "admin")[1]
        self.app = create_app(engine, CAT, clock=Clock(), context_ttl=0, key_cache_ttl=0)
        self.client = TestClient(self.app, raise_server_exceptions=False).__enter__()

    def post(self, path: str, body: dict, *, key: str | None = None):
        headers = {"Authorization": f"Bearer {self.key}", **({"Idempotency-Key": key} if key else {})}
        return self.client.post(path, headers=headers, json=body)


@pytest.fixture
def api(any_engine):
    api = Api(any_engine)
    for cid in ("acme", "globex"):
        assert api.post("/v1/customers", {"id": cid}).status_code == 201
        assert api.post(f"/v1/customers/{cid}/subscriptions", {"plan": "summed", "at": T0.isoformat()}).status_code == 201
    yield api
    api.client.__exit__(None, None, None)


def _reserve_op(quota, customer: str) -> Op:
    return Op("reserve", customer=customer, request=parse_request(customer, "units", 1, None, None, None, 0, None,
                                                                  None, None, None), ttl=60.0)


def test_only_a_batch_of_promising_callers_skips_the_flush(api):
    quota = api.app.state.services.quota
    pg = quota.conns.pg
    with flushed_later() as promise:
        assert quota.reserve("acme", "units", 1).decision.granted
    assert promise.owed is pg  # PostgreSQL: the batch left the flush to this caller
    quota.reserve("acme", "units", 1)  # no promise: nothing owed anywhere
    # one batch of a promising caller and one that did not promise: durable on its own
    with flushed_later() as mine:
        promised, plain = _reserve_op(quota, "acme"), _reserve_op(quota, "globex")
        promised.later = mine
        quota.writer._run_batch([promised, plain])
    assert promised.result.decision.granted and plain.result.decision.granted
    assert not mine.owed
    with flushed_later() as a, flushed_later() as b:
        one, two = _reserve_op(quota, "acme"), _reserve_op(quota, "globex")
        one.later, two.later = a, b
        quota.writer._run_batch([one, two])
    assert a.owed is pg and b.owed is pg


def test_an_answer_not_recorded_is_flushed_before_it_is_sent(api, monkeypatch):
    """The record of the answer is the durable write; when it does not write (the key was
    taken over, or the answer is not kept), the layer flushes before answering."""
    layer = api.app.state.idempotency
    flushes = []
    real_flush = layer.store.flush
    monkeypatch.setattr(layer.store, "flush", lambda scope, key: (flushes.append(key), real_flush(scope, key)))
    assert api.post("/v1/quota/reserve", RESERVE, key="recorded").status_code == 200
    assert flushes == []  # the record was the durable write
    monkeypatch.setattr(layer.store, "finish", lambda *a, **k: False)  # as if taken over meanwhile
    assert api.post("/v1/quota/reserve", RESERVE, key="not-recorded").status_code == 200
    assert flushes == (["not-recorded"] if layer.store.pg else [])


def test_a_flush_that_fails_is_503_not_an_answer(api, monkeypatch):
    layer = api.app.state.idempotency
    if not layer.store.pg:
        pytest.skip("SQLite commits durably: nothing is owed")

    def broken(scope, key):
        raise psycopg.OperationalError("the server went away")

    monkeypatch.setattr(layer.store, "finish", lambda *a, **k: False)
    monkeypatch.setattr(layer.store, "flush", broken)
    r = api.post("/v1/quota/reserve", RESERVE, key="unflushed")
    assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"


def test_the_batch_is_flushed_when_the_answer_is_sent(api, monkeypatch):
    """PostgreSQL: the WAL is flushed past the batch's commit record before the answer
    (read right after the batch: every later flush position covers it)."""
    quota = api.app.state.services.quota
    if not quota.conns.pg:
        pytest.skip("PostgreSQL's WAL")
    url = quota.conns._conninfo
    after_batch = []
    real = quota.writer._transaction

    def noted(ops):
        deferred = real(ops)
        with psycopg.connect(url, autocommit=True) as c:
            after_batch.append(c.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])
        return deferred

    monkeypatch.setattr(quota.writer, "_transaction", noted)
    r = api.post("/v1/quota/reserve", RESERVE, key="flushed")
    assert r.status_code == 200 and after_batch
    with psycopg.connect(url, autocommit=True) as c:
        assert c.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (str(after_batch[0]),)).fetchone()[0]


def test_flush_is_a_durable_rewrite_of_the_record(any_engine):
    store = IdempotencyStore(any_engine)
    store.claim("s", "k", "f", "o", now_us=10, lease_us=5, retention_us=100)
    before = store.get("s", "k")
    store.flush("s", "k")
    store.flush("s", "gone")  # no record: nothing to write, no error
    assert store.get("s", "k") == before
