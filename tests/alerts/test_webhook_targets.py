"""Webhook endpoints reach public addresses only by default (``billing.alerts.targets``):
loopback, private, link-local, metadata, multicast and other non-global addresses are
refused ``webhook_target_forbidden`` (``param: url``) at create and update (API and
library), and again at each delivery after a fresh DNS answer (rebinding), where the POST
goes to the very address checked (``Host`` and TLS name kept).
``BILLING_WEBHOOK_ALLOW_PRIVATE_TARGETS=1`` lets them through."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient

from billing.alerts import targets
from billing.alerts.delivery import WebhookDispatcher
from billing.alerts.endpoints import Endpoints
from billing.alerts.events import enqueue_event
from billing.alerts.outbox import Outbox
from billing.api.app import create_app
from billing.api.auth import create_key
from billing.errors import BillingError
from tests.support.quota import NOW, Clock, catalog
from tests.support.webhooks import allow_private_targets

PUBLIC = "93.184.216.34"
REFUSED = ["127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "0.0.0.0",
           "100.64.0.1", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254",
           "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254"]


@pytest.fixture(autouse=True)
def _default_setting():
    allow_private_targets(None)  # the default: refused
    yield
    allow_private_targets(None)


@pytest.fixture
def dns(monkeypatch):
    """A DNS whose answers the test sets: ``dns[host] = [addresses]``."""
    answers: dict[str, list[str]] = {}

    def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise targets.socket.gaierror(-2, "Name or service not known")
        return answers[host]

    monkeypatch.setattr(targets, "resolve", resolve)
    return answers


def test_which_addresses_are_refused():
    for text in REFUSED:
        assert targets.why_forbidden(ipaddress.ip_address(text)) is not None, text
    assert "metadata" in targets.why_forbidden(ipaddress.ip_address("169.254.169.254"))
    for text in (PUBLIC, "8.8.8.8", "2606:4700:4700::1111"):
        assert targets.why_forbidden(ipaddress.ip_address(text)) is None, text


def refused(call) -> BillingError:
    with pytest.raises(BillingError) as err:
        call()
    assert err.value.code == "webhook_target_forbidden" and err.value.param == "url", err.value
    return err.value


def test_create_and_update_refuse_private_targets(sqlite_engine, dns):
    eps = Endpoints(sqlite_engine)
    dns["inside.example"] = ["10.1.2.3"]
    dns["mixed.example"] = [PUBLIC, "127.0.0.1"]  # any non-public answer refuses
    dns["hooks.example"] = [PUBLIC]
    for url in ("http://127.0.0.1:9/h", "http://[::1]/h", "http://169.254.169.254/latest/meta-data/",
                "http://[::ffff:7f00:1]/h", "https://inside.example/x", "https://mixed.example/x"):
        assert "public addresses only" in refref(eps, url)
    made = eps.create("https://hooks.example/x", now=NOW)
    assert eps.create("https://not-yet.example/x", now=NOW)["url"] == "https://not-yet.example/x"  # checked at delivery
    refused(lambda: eps.update(made["id"], url="http://192.168.0.10/x", now=NOW))
    assert eps.get(made["id"])["url"] == "https://hooks.example/x"
    allowed = Endpoints(sqlite_engine, allow_private=True)
    assert allowed.create("http://127.0.0.1:9/h", now=NOW)["url"] == "http://127.0.0.1:9/h"
    allow_private_targets("1")  # the setting, read at each call
    assert eps.update(made["id"], url="http://10.0.0.7/x", now=NOW)["url"] == "http://10.0.0.7/x"


def refref(eps: Endpoints, url: str) -> str:
    return refused(lambda: eps.create(url, now=NOW)).message


def test_the_api_answers_422_webhook_target_forbidden(sqlite_engine):
    client = TestClient(create_app(sqlite_engine, catalog(), clock=Clock(), context_ttl=0, key_cache_ttl=0))
    auth = {"Authorization": f"Bearer {create_key(sqlite_engine, 'admin')[1]}"}
    r = client.post("/v1/webhook_endpoints", headers=auth, json={"url": "http://localhost:8080/hooks"})
    assert r.status_code == 422, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("webhook_target_forbidden", "url")
    made = client.post("/v1/webhook_endpoints", headers=auth, json={"url": "https://h.example/x"}).json()
    r = client.patch(f"/v1/webhook_endpoints/{made['id']}", headers=auth, json={"url": "http://10.0.0.1/"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "webhook_target_forbidden", r.text


def test_delivery_checks_dns_again_and_posts_to_the_checked_address(any_engine, dns):
    sent: list[httpx.Request] = []
    client = httpx.Client(transport=httpx.MockTransport(lambda req: sent.append(req) or httpx.Response(204)))
    dns["hooks.example"] = [PUBLIC]
    Endpoints(any_engine).create("https://hooks.example:8443/in?x=1", now=NOW)
    with any_engine.begin() as conn:
        assert enqueue_event(conn, "invoice.finalized", "inv_1", "acme", {"invoice": {"id": "inv_1"}}, NOW)
    clock = Clock()
    d = WebhookDispatcher(Outbox(any_engine, clock=clock), client=client, base_delay=1)
    dns["hooks.example"] = ["127.0.0.1"]  # rebinding: the name now points inside
    assert d.run_once()["retried"] == 1 and sent == []  # refused, nothing sent
    with any_engine.connect() as conn:
        error = conn.exec_driver_sql("SELECT last_error FROM webhook_delivery").scalar_one()
    assert error.startswith("webhook_target_forbidden") and "127.0.0.1" in error
    dns["hooks.example"] = [PUBLIC]
    clock.now += timedelta(seconds=5)  # the retry is due
    assert d.run_once()["delivered"] == 1
    (request,) = sent
    assert str(request.url) == f"https://{PUBLIC}:8443/in?x=1"
    assert request.headers["host"] == "hooks.example:8443"
    assert request.extensions["sni_hostname"] == "hooks.example"  # the certificate is checked for the name
