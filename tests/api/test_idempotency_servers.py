"""Idempotency-Key with real `billing serve` processes on PostgreSQL: a server killed (-9)
while it runs a keyed commit leaves the key in use until its lease lapses, then the retry,
sent to the other server, runs once; and a lease is renewed while a slow request runs (an
in-process app on the real clock), so a long request is never run twice."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.catalog import Catalog
from billing.ledger.accounts import Accounts
from tests.support.db import engine_for_url, postgres_database, postgres_server_url
from tests.support.quota import T0
from tests.support.live_server import billing_serve, wait_healthy
from tests.support.summed import CAT, SUMMED_PLAN

LEASE = 4.0


def _blocked_on_a_lock(conninfo: str) -> bool:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0] > 0


@pytest.mark.slow
@pytest.mark.postgres
def test_a_server_killed_mid_request_frees_its_key_after_the_lease(tmp_path, monkeypatch):
    monkeypatch.setenv("BILLING_IDEMPOTENCY_LEASE_SECONDS", str(LEASE))
    plans_dir = tmp_path / "plans"
    plans_dir.mkdir()
    (plans_dir / "summed.yaml").write_text(SUMMED_PLAN)
    with postgres_database(postgres_server_url()) as url, engine_for_url(url) as engine:
        conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        start = datetime.now(UTC) - timedelta(days=1)
        acc = Accounts(engine, Catalog.from_paths(plans_dir))
        acc.create_customer("acme", now=start)
        acc.subscribe("acme", "summed", at=start)
        _, key = create_key(engine, "check")
        headers = {"Authorization": f"Bearer {key}"}
        with ExitStack() as stack:
            servers = [stack.enter_context(billing_serve(url, plans_dir, tmp_path / f"s{i}.log", wait=False))
                       for i in range(2)]
            for i, (proc, base) in enumerate(servers):
                wait_healthy(base, proc, tmp_path / f"s{i}.log")
            (victim, a), (_, b) = servers
            rid = httpx.post(f"{a}/v1/quota/reserve", headers=headers, timeout=30,
                             json={"customer": "acme", "meter": "units", "quantity": 3}).json()["reservation_id"]
            body = {"reservation_id": rid, "event": {"properties": {"units": 3}}}
            keyed = {**headers, "Idempotency-Key": "commit-1"}

            with psycopg.connect(conninfo) as lock:  # hold the hold's row: the commit waits inside its request
                lock.execute("SELECT id FROM quota_hold WHERE id = %s FOR UPDATE", (rid,))
                with ThreadPoolExecutor(1) as pool:
                    lost = pool.submit(lambda: httpx.post(f"{a}/v1/quota/commit", json=body, headers=keyed, timeout=30))
                    deadline = time.monotonic() + 20
                    while not _blocked_on_a_lock(conninfo):
                        assert time.monotonic() < deadline, "the commit never reached the database"
                        time.sleep(0.05)
                    victim.kill()  # kill -9 mid-request: no answer, no response stored
                    victim.wait(10)
                    assert isinstance(lost.exception(20), httpx.TransportError)
                lock.rollback()

            busy = httpx.post(f"{b}/v1/quota/commit", json=body, headers=keyed, timeout=30)
            assert busy.status_code == 409 and busy.json()["error"]["code"] == "idempotency_key_in_use", busy.text
            deadline = time.monotonic() + LEASE + 15
            while busy.status_code == 409:
                assert time.monotonic() < deadline, busy.text
                time.sleep(0.5)
                busy = httpx.post(f"{b}/v1/quota/commit", json=body, headers=keyed, timeout=30)
            assert busy.status_code == 200 and busy.json()["event"] == "accepted", busy.text
            assert "idempotent-replayed" not in busy.headers
            replay = httpx.post(f"{b}/v1/quota/commit", json=body, headers=keyed, timeout=30)
            assert replay.content == busy.content and replay.headers["idempotent-replayed"] == "true"
            usage = httpx.get(f"{b}/v1/customers/acme/usage", headers=headers, timeout=30).json()
            assert (usage["meters"]["units"]["used"], usage["meters"]["units"]["events"]) == ("3", 1)

            # one keep-alive connection: a refused body (415) or key (400) leaves it usable
            parsed = urlparse(b)
            conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
            check = json.dumps({"customer": "acme", "meter": "units"}).encode()
            for extra, status in (({"Content-Type": "text/plain"}, 415), ({"Idempotency-Key": "x" * 300}, 400),
                                  ({"Content-Type": "application/json"}, 200)):
                conn.request("POST", "/v1/quota/check", body=check, headers={**headers, **extra})
                response = conn.getresponse()
                assert response.status == status, response.read()
                response.read()
            conn.close()


def test_a_slow_request_keeps_its_key_by_renewing_the_lease(sqlite_engine, monkeypatch):
    """A request slower than the lease (0.6 s, renewed every 0.2 s) on the real clock: a
    second request with its key is still 409 in use after 1 s, not run a second time."""
    Accounts(sqlite_engine, CAT).create_customer("acme", now=T0)
    Accounts(sqlite_engine, CAT).subscribe("acme", "summed", at=T0)
    app = create_app(sqlite_engine, CAT, context_ttl=0, key_cache_ttl=0)  # the real clock
    layer = app.state.idempotency
    layer.lease_us, layer.renew_every = 600_000, 0.2
    key = create_key(sqlite_engine, "check")[1]
    quota = app.state.services.quota
    real = quota.reserve
    calls = []

    def slow(*args, **kwargs):
        calls.append(1)
        time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(quota, "reserve", slow)
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "slow"}
    body = {"customer": "acme", "meter": "units", "quantity": 1}
    with TestClient(app) as first_client, TestClient(app) as second_client, ThreadPoolExecutor(1) as pool:
        first = pool.submit(first_client.post, "/v1/quota/reserve", json=body, headers=headers)
        time.sleep(1.0)  # past the first lease: only the renewals keep the key
        second = second_client.post("/v1/quota/reserve", json=body, headers=headers)
        assert second.status_code == 409 and second.json()["error"]["code"] == "idempotency_key_in_use", second.text
        assert first.result(10).status_code == 200
    assert len(calls) == 1
