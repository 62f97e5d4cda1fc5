"""The list, subscription, credit and invoice routes against their own OpenAPI declaration
(schemathesis): on a ledger holding a row of every kind (customers, subscriptions, a credit
grant, finalized invoices, events), whatever the generated request, no 5xx and every answer
conforms to the schema the route declares (its response model, and its error responses)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import response_schema_conformance  # noqa: E402
from sqlalchemy import create_engine  # noqa: E402

from billing.api.app import create_app  # noqa: E402
from billing.api.auth import create_key  # noqa: E402
from billing.invoicing.service import Invoicing  # noqa: E402
from billing.ledger.accounts import Accounts  # noqa: E402
from billing.ledger.ingest import Ledger  # noqa: E402
from tests.support.db import engine_for_url, sqlite_database  # noqa: E402
from tests.support.quota import catalog  # noqa: E402

CATALOG = catalog()
NEW = ("/v1/customers", "/v1/subscriptions", "/v1/credit_grants", "/v1/invoices", "/v1/credit_notes", "/v1/events")
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(engine=create_engine("sqlite://"),
                                                                    catalog=CATALOG))
ours = schema.include(path_regex=r"^/v1/(customers|subscriptions|credit_grants|invoices|credit_notes|events)"
                                 r"($|/(\{[a-z_]+\}|close)?(/(seats|change_plan|cancel|pay|void|mark_uncollectible))?$)")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with sqlite_database(tmp_path_factory.mktemp("lists_schema")) as url, engine_for_url(url) as engine:
        start = datetime.now(UTC) - timedelta(days=70)
        accounts = Accounts(engine, CATALOG)
        for cid in ("acme", "globex"):
            accounts.create_customer(cid, now=start)
            accounts.subscribe(cid, "blocky", at=start, seats=2)
        accounts.grant_credits("acme", Decimal("5"), at=start, grant_id="g1")
        for cid in ("acme", "globex"):  # ended: a close as of any instant has two periods each to close
            accounts.cancel(cid, at=start + timedelta(days=40))
        Ledger(engine, CATALOG).record([{"id": f"e{i}", "customer": "acme", "type": "request",
                                         "timestamp": (start + timedelta(days=i)).isoformat(), "properties": {}}
                                        for i in range(5)])
        Invoicing(engine, CATALOG).close(datetime.now(UTC) - timedelta(days=1))
        _, key = create_key(engine, "admin", name="lists-schema")
        yield create_app(engine=engine, catalog=CATALOG, key_cache_ttl=60.0), key


@ours.parametrize()
@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_lists_and_writes_answer_what_they_declare(case, live):
    app, key = live
    assert case.path.startswith(NEW)
    response = case.call(app=app, headers={"Authorization": f"Bearer {key}"})
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
