"""``entitlement`` on both clients (in-process and over HTTP): the same answers, the same
``customer_not_found`` error."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from billing.client import HttpClient, LocalClient
from billing.errors import BillingError, ErrorCode
from billing.ledger.accounts import Accounts
from billing.reservations.holds import Quota
from tests.support.quota import T0, Clock, catalog

CAT = catalog()


@pytest.fixture(params=["local", "http"])
def client(request, sqlite_engine, tmp_path):
    accounts = Accounts(sqlite_engine, CAT)
    accounts.create_customer("acme", now=T0)
    accounts.subscribe("acme", "cursor-pro", at=T0)
    clock = Clock()
    if request.param == "local":
        return LocalClient(Quota(sqlite_engine, CAT, clock=clock))
    _, key = create_key(sqlite_engine, "check")
    app = create_app(sqlite_engine, CAT, clock=clock, context_ttl=0)
    return HttpClient("http://testserver", key, client=TestClient(app, base_url="http://testserver"),
                      spool_dir=False, clock=clock)


def test_both_clients_answer_entitlements(client):
    privacy = client.entitlement("acme", "privacy_mode")
    assert (privacy["plan"], privacy["kind"], privacy["has"], privacy["value"]) == (
        {"id": "cursor-pro", "version": 1}, "boolean", True, True)
    assert (client.entitlement("acme", "sso")["has"], client.entitlement("acme", "max_workspaces")["value"]) == (
        False, 10)
    fast = client.entitlement("acme", "fast_requests")
    assert (fast["kind"], fast["has"], fast["metered"]) == ("metered", True, "fast_requests")
    assert fast["decision"] == client.check("acme", charge="fast_requests")
    assert client.entitlement("acme", "bugbot")["kind"] == "absent"
    with pytest.raises(BillingError) as err:
        client.entitlement("nobody", "sso")
    assert err.value.code == ErrorCode.CUSTOMER_NOT_FOUND
