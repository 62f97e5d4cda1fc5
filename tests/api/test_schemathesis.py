"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis):
whatever the generated request, the service never answers 5xx (malformed input is a 4xx
with the JSON error body of ``billing.api.errors``).

The schema is read at import from an app over an engine that is never connected (building
the app touches no database); every case is then sent in process (ASGI) to ``create_app``
on a fresh, migrated SQLite database holding one customer on a plan, authenticated with an
admin key. Checked: no 5xx, and every answer is one the document declares (its status, its
media type, its body against the declared schema: ``response_schema_conformance``), errors in
the body of ``billing.api.errors``; bounded to 25 examples per operation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance, not_a_server_error, response_schema_conformance, status_code_conformance)
from sqlalchemy import create_engine  # noqa: E402

from billing.api.app import create_app  # noqa: E402
from billing.api.auth import create_key  # noqa: E402
from billing.ledger.accounts import Accounts  # noqa: E402
from billing.api.stripe_webhook import get_webhook_secret  # noqa: E402
from tests.support.db import engine_for_url, sqlite_database  # noqa: E402
from tests.support.errors import error_of  # noqa: E402
from tests.support.quota import catalog  # noqa: E402

CATALOG = catalog()
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(engine=create_engine("sqlite://"),
                                                                    catalog=CATALOG))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """(app on a fresh database, admin key)."""
    with sqlite_database(tmp_path_factory.mktemp("schemathesis")) as url, engine_for_url(url) as engine:
        start = datetime.now(UTC) - timedelta(days=1)
        acc = Accounts(engine, CATALOG)
        acc.create_customer("acme", now=start)
        acc.subscribe("acme", "blocky", at=start, seats=1)
        _, key = create_key(engine, "admin", name="schemathesis")
        app = create_app(engine=engine, catalog=CATALOG, key_cache_ttl=60.0)
        # a configured Stripe webhook secret (unconfigured, the webhook answers 503 by design)
        app.dependency_overrides[get_webhook_secret] = lambda: "whsec_schemathesis"
        yield app, key


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx(case, live):
    app, key = live
    _send(case, app, key)
    # again for the customer that exists (random ids mostly stop at "customer not found")
    if isinstance(case.body, dict) and "customer" in case.body:
        case.body = {**case.body, "customer": "acme"}
        _send(case, app, key)
    elif "customer_id" in (case.path_parameters or {}):
        case.path_parameters = {**case.path_parameters, "customer_id": "acme"}
        _send(case, app, key)


def _send(case, app, key) -> None:
    response = case.call(app=app, headers={"Authorization": f"Bearer {key}"})
    # every answer is one the document declares: its status, its media type, its body's schema
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                             response_schema_conformance])
    content_type = (response.headers.get("content-type") or [""])[0]
    if response.status_code >= 400 and content_type.startswith("application/json"):
        error_of(response.json())
