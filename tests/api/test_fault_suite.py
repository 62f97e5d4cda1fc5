"""The HTTP API fuzzed from its own OpenAPI schema (schemathesis) over a real socket, on
PostgreSQL, while three threads send valid traffic at the same time (quota checks on the
fast path, reserve + commit pairs, event batches and usage reads): no 5xx for either, every
fuzzed answer conforms to the document (its status, media type and body schema), and the
valid traffic keeps getting its answers.

The server is uvicorn (httptools, as `billing serve`) in a thread of the test process, on a
fresh PostgreSQL database (skipped without ``BILLING_TEST_POSTGRES_URL``, failed when
``BILLING_REQUIRE_POSTGRES=1``). Bounded to 8 examples per operation.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

schemathesis = pytest.importorskip("schemathesis")

import httpx  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance, not_a_server_error, response_schema_conformance, status_code_conformance)
from sqlalchemy import create_engine  # noqa: E402

from billing.api.app import create_app  # noqa: E402
from billing.api.auth import create_key  # noqa: E402
from billing.ledger.accounts import Accounts  # noqa: E402
from billing.api.stripe_webhook import get_webhook_secret  # noqa: E402
from tests.support.db import engine_for_url, postgres_database, postgres_server_url  # noqa: E402
from tests.support.live_server import uvicorn_thread  # noqa: E402
from tests.support.errors import error_of  # noqa: E402
from tests.support.quota import catalog  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.slow]  # the load runs on a fresh PostgreSQL database
CATALOG = catalog()
schema = schemathesis.openapi.from_dict(create_app(engine=create_engine("sqlite://"), catalog=CATALOG).openapi())


class Load:
    """Valid traffic from a few threads until stopped; statuses counted per kind of call."""

    def __init__(self, base: str, keys: dict[str, str]):
        self.base, self.keys = base, keys
        self.stop = threading.Event()
        self.statuses: Counter = Counter()
        self.failures: list[str] = []
        self.away: dict[str, tuple] = {}  # path parameter: (the load's value, the fuzzer's instead)
        self.threads = [threading.Thread(target=self._run, args=(kind,), daemon=True)
                        for kind in ("check", "reserve", "events")]

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _run(self, kind: str) -> None:
        with httpx.Client(base_url=self.base, timeout=30.0) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                try:
                    for label, response in getattr(self, f"_{kind}")(client, n):
                        self.statuses[(label, response.status_code)] += 1
                        if response.status_code >= 500 or (label != "reserve" and response.status_code != 200):
                            self.failures.append(f"{label}: {response.status_code} {response.text[:200]}")
                except httpx.HTTPError as exc:  # a dropped connection is a failure too
                    self.failures.append(f"{kind}: {exc!r}")

    def _auth(self, scope: str) -> dict:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    def _check(self, client: httpx.Client, n: int):
        yield "check", client.post("/v1/quota/check", json={"customer": "acme", "meter": "requests"},
                                   headers=self._auth("check"))

    def _reserve(self, client: httpx.Client, n: int):
        r = client.post("/v1/quota/reserve", json={"customer": "acme", "meter": "steps", "request_id": f"load-{n}",
                                                   "ttl_seconds": 60}, headers=self._auth("check"))
        yield "reserve", r
        if r.status_code == 200 and r.json().get("reservation_id"):
            yield "commit", client.post("/v1/quota/commit", json={"reservation_id": r.json()["reservation_id"]},
                                        headers=self._auth("check"))

    def _events(self, client: httpx.Client, n: int):
        now = datetime.now(UTC) - timedelta(seconds=1)
        events = [{"id": f"load-{n}-{i}-{uuid.uuid4().hex[:6]}", "customer": "acme", "type": "request",
                   "timestamp": now.isoformat(), "properties": {"feature": "load"}} for i in range(20)]
        yield "events", client.post("/v1/events", json={"events": events}, headers=self._auth("ingest"))
        yield "usage", client.get("/v1/customers/acme/usage", headers=self._auth("check"))


@pytest.fixture(scope="module")
def live():
    """(base URL, admin key, the running load) over a fresh PostgreSQL database. The fuzzer
    acts on a decoy customer where it names the load's (its subscription, its path): the
    admin key may cancel or change a subscription, which would stop the valid traffic."""
    with postgres_database(postgres_server_url()) as url, engine_for_url(url) as engine:
        start = datetime.now(UTC) - timedelta(days=1)
        accounts = Accounts(engine, CATALOG)
        accounts.create_customer("acme", now=start)
        load_sub = accounts.subscribe("acme", "blocky", at=start, seats=1).id
        accounts.create_customer("decoy", now=start)  # what the fuzzer writes to instead of the load's customer
        decoy_sub = accounts.subscribe("decoy", "blocky", at=start, seats=1).id
        away = {"subscription_id": (load_sub, decoy_sub), "customer_id": ("acme", "decoy")}
        keys = {scope: create_key(engine, scope, name=f"load-{scope}")[1] for scope in ("check", "ingest")}
        admin = create_key(engine, "admin", name="schemathesis")[1]
        app = create_app(engine=engine, catalog=CATALOG, key_cache_ttl=60.0)
        app.dependency_overrides[get_webhook_secret] = lambda: "whsec_fault_suite"
        with uvicorn_thread(app) as base, Load(base, keys) as load:
            load.away = away
            yield base, admin, load


@schema.parametrize()
@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_under_load_never_answer_5xx(case, live):
    base, admin, load = live
    for name, (mine, decoy) in load.away.items():
        if str((case.path_parameters or {}).get(name)) == str(mine):  # examples give ids as text
            case.path_parameters = {**case.path_parameters, name: decoy}
    response = case.call(base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    # no 5xx, and every answer (under load too) is one the document declares
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                             response_schema_conformance])
    content_type = (response.headers.get("content-type") or [""])[0]
    if response.status_code >= 400 and content_type.startswith("application/json"):
        error_of(response.json())


def test_the_valid_traffic_alongside_was_served(live):
    """Runs after the fuzzing (file order): the load saw no 5xx and no dropped connection,
    and it really ran (every kind of call answered many times)."""
    _base, _admin, load = live
    assert not load.failures, load.failures[:10]
    for label in ("check", "reserve", "commit", "events", "usage"):
        assert load.statuses[(label, 200)] >= 5, dict(load.statuses)
