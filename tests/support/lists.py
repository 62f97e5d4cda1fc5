"""The list and write routes' tests: an app over an engine with one key per scope, the error
code of an answer in either error shape, and walking a list's pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from billing.api.app import create_app
from billing.api.auth import create_key
from tests.support.quota import Clock, catalog

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)


def error_code(resp) -> str | None:
    """The stable code of an error answer: ``{"code"}`` or Stripe's ``{"error": {"code"}}``."""
    body = resp.json()
    if isinstance(body.get("error"), dict):
        return body["error"].get("code")
    return body.get("code")


def error_param(resp) -> str | None:
    """The query parameter an error names (``error.param``, else ``details.param``)."""
    body = resp.json()
    err = body["error"] if isinstance(body.get("error"), dict) else body
    if err.get("param"):
        return err["param"]
    details = err.get("details")
    return details.get("param") if isinstance(details, dict) else None


def make_api(engine, clock: Clock | None = None, plans=None):
    """``call(method, path, key="admin", **httpx kwargs)`` over a new app on ``engine``
    (the quota tests' plans, or ``plans``)."""
    clock = clock or Clock(datetime(2026, 10, 10, 12, tzinfo=UTC))
    client = TestClient(create_app(engine, plans or catalog(), clock=clock, context_ttl=0, key_cache_ttl=0))
    keys = {scope: create_key(engine, scope)[1] for scope in ("ingest", "check", "read", "admin")}
    keys["acme-read"] = create_key(engine, "read", customer="acme")[1]
    keys["acme-admin"] = create_key(engine, "admin", customer="acme")[1]

    def call(method: str, path: str, key: str | None = "admin", **kw):
        headers = {"Authorization": f"Bearer {keys[key]}"} if key else {}
        headers.update(kw.pop("headers", {}))
        return client.request(method, path, headers=headers, **kw)

    call.client, call.engine, call.clock, call.keys = client, engine, clock, keys
    return call


def ok(resp, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


def walk(call, path: str, limit: int, *, backward: bool = False, key: str = "admin", **params) -> list[dict]:
    """Every row of a list, page by page (forward from the start, or backward from the end
    reversed into list order), checking each page's shape."""
    rows: list[dict] = []
    cursor: str | None = None
    if backward:  # find the end first: the last page's cursor
        last = None
        for page in _pages(call, path, limit, key, params, "starting_after"):
            last = page
        if last is None or not last["data"]:
            return []
        pages = [last["data"]]
        cursor = last["previous_cursor"]
        while True:
            page = ok(call("GET", path, key=key, params={**params, "limit": limit, "ending_before": cursor}))
            if page["data"]:
                pages.append(page["data"])
                cursor = page["previous_cursor"]
            if not page["has_more"]:
                break
        for data in reversed(pages):
            rows.extend(data)
        return rows
    for page in _pages(call, path, limit, key, params, "starting_after"):
        rows.extend(page["data"])
    return rows


def _pages(call, path, limit, key, params, direction):
    cursor = None
    while True:
        query = {**params, "limit": limit}
        if cursor is not None:
            query[direction] = cursor
        page = ok(call("GET", path, key=key, params=query))
        assert page["object"] == "list" and page["url"] == path and len(page["data"]) <= limit
        yield page
        if not page["has_more"]:
            return
        assert len(page["data"]) == limit and page["next_cursor"]
        cursor = page["next_cursor"]
