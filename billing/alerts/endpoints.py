"""Webhook endpoints (the ``webhook_endpoint`` table): where webhooks go, each with its own
Standard Webhooks secret and event-type filter. Managed by ``billing webhooks`` and
``/v1/webhook_endpoints``; read by the dispatcher at each pass.

Rules checked here (one place for the API and the CLI): the URL is ``http`` or ``https`` with
a host (else ``validation_error`` naming ``param: url``) that reaches public addresses only
(else ``webhook_target_forbidden``, unless private targets are allowed:
``billing.alerts.targets``); event types are known ones or a ``prefix.*`` wildcard over known ones (``param: event_types``); an empty list receives every
type. The secret is shown when the endpoint is created (and by ``secret``), never in lists.
"""

from __future__ import annotations

import json
import secrets as _secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, delete, insert, select, update

from billing.alerts import targets
from billing.alerts.events import EVENT_TYPES, iso
from billing.alerts.signing import new_secret, valid_secret
from billing.errors import BillingError, ErrorCode
from billing.store.operational_models import WebhookEndpoint
from billing.store.types import from_us, to_us

_ep = WebhookEndpoint.__table__
STATUSES = ("enabled", "disabled")
MAX_URL = 2000
MAX_TYPES = 50


def _bad(message: str, param: str) -> BillingError:
    return BillingError(message, code=ErrorCode.VALIDATION, details={"param": param})


def check_url(url: Any) -> str:
    if not isinstance(url, str) or not url.strip():
        raise _bad("url: required, an http(s) URL", "url")
    url = url.strip()
    if len(url) > MAX_URL:
        raise _bad(f"url: longer than {MAX_URL} characters", "url")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise _bad(f"url: not a URL: {url[:100]!r}", "url") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _bad(f"url: must be http or https, not {parts.scheme or 'no scheme'!r}", "url")
    if not host or any(c.isspace() for c in url):
        raise _bad(f"url: no host (or a blank in it): {url[:100]!r}", "url")
    return url


def allow_private_targets() -> bool:
    from billing.config import get_settings

    return get_settings().webhook_allow_private_targets


def check_event_types(types: Any) -> list[str]:
    if types is None:
        return []
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise _bad("event_types: a list of event type names", "event_types")
    if len(types) > MAX_TYPES:
        raise _bad(f"event_types: at most {MAX_TYPES}", "event_types")
    out = []
    for t in types:
        t = t.strip()
        ok = t in EVENT_TYPES or (t.endswith(".*") and any(e.startswith(t[:-1]) for e in EVENT_TYPES))
        if not ok:
            raise _bad(f"event_types: unknown type {t[:80]!r}; the types are {', '.join(EVENT_TYPES)} "
                       "(or 'prefix.*')", "event_types")
        out.append(t)
    return sorted(set(out))


def check_status(status: Any) -> str:
    if status not in STATUSES:
        raise _bad(f"status: must be one of {', '.join(STATUSES)}", "status")
    return status


def check_description(text: Any) -> str | None:
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > 500:
        raise _bad("description: text of at most 500 characters", "description")
    return text


def matches(event_types: Iterable[str], type_: str) -> bool:
    """Whether an endpoint with filter ``event_types`` receives ``type_`` (empty: every type)."""
    types = list(event_types)
    return not types or any(t == type_ or (t.endswith(".*") and type_.startswith(t[:-1])) for t in types)


def view(row: Any, *, with_secret: bool = False) -> dict[str, Any]:
    m = row._mapping if hasattr(row, "_mapping") else row
    out = {"id": m["id"], "url": m["url"], "event_types": json.loads(m["event_types"]),
           "description": m["description"], "status": m["status"],
           "created_at": iso(from_us(m["created_at"])), "updated_at": iso(from_us(m["updated_at"]))}
    if with_secret:
        out["secret"] = m["secret"]
    return out


class Endpoints:
    def __init__(self, engine: Engine, *, allow_private: bool | None = None):
        """``allow_private``: endpoints may point at private addresses (default: the
        ``BILLING_WEBHOOK_ALLOW_PRIVATE_TARGETS`` setting)."""
        self.engine = engine
        self.allow_private = allow_private

    def _url(self, url: Any) -> str:
        url = check_url(url)
        targets.check_new(url, allow_private_targets() if self.allow_private is None else self.allow_private)
        return url

    def create(self, url: Any, *, event_types: Any = None, description: Any = None, secret: Any = None,
               now: datetime) -> dict[str, Any]:
        url = self._url(url)
        types = check_event_types(event_types)
        description = check_description(description)
        if secret is None:
            secret = new_secret()
        elif not (isinstance(secret, str) and valid_secret(secret)):
            raise _bad("secret: must be 'whsec_' + base64 of 24 to 64 bytes", "secret")
        now_us = to_us(now)
        row = {"id": "we_" + _secrets.token_hex(12), "url": url, "secret": secret, "event_types": json.dumps(types),
               "description": description, "status": "enabled", "created_at": now_us, "updated_at": now_us}
        with self.engine.begin() as conn:
            conn.execute(insert(_ep).values(**row))
        return view(row, with_secret=True)

    def get(self, endpoint_id: str, *, with_secret: bool = False) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(_ep).where(_ep.c.id == endpoint_id)).first()
        if row is None:
            raise BillingError(f"no webhook endpoint {endpoint_id[:60]!r}", code=ErrorCode.NOT_FOUND,
                               details={"param": "id"})
        return view(row, with_secret=with_secret)

    def list(self, *, limit: int = 100, starting_after: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        """Endpoints in id order after ``starting_after``; (page, has_more)."""
        query = select(_ep).order_by(_ep.c.id).limit(limit + 1)
        if starting_after is not None:
            query = query.where(_ep.c.id > starting_after)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [view(r) for r in rows[:limit]], len(rows) > limit

    def update(self, endpoint_id: str, *, now: datetime, url: Any = None, event_types: Any = None,
               description: Any = None, status: Any = None, rotate_secret: bool = False) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if url is not None:
            values["url"] = self._url(url)
        if event_types is not None:
            values["event_types"] = json.dumps(check_event_types(event_types))
        if description is not None:
            values["description"] = check_description(description)
        if status is not None:
            values["status"] = check_status(status)
        if rotate_secret:
            values["secret"] = new_secret()
        values["updated_at"] = to_us(now)
        with self.engine.begin() as conn:
            if conn.execute(update(_ep).where(_ep.c.id == endpoint_id).values(**values)).rowcount == 0:
                raise BillingError(f"no webhook endpoint {endpoint_id[:60]!r}", code=ErrorCode.NOT_FOUND,
                                   details={"param": "id"})
        return self.get(endpoint_id, with_secret=rotate_secret)

    def delete(self, endpoint_id: str) -> bool:
        """Remove the endpoint (its deliveries stay in the log). False if there was none."""
        with self.engine.begin() as conn:
            return conn.execute(delete(_ep).where(_ep.c.id == endpoint_id)).rowcount > 0

    def enabled(self) -> list[dict[str, Any]]:
        """Every enabled endpoint, with its secret and parsed filter (the dispatcher's view)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(_ep).where(_ep.c.status == "enabled").order_by(_ep.c.id)).all()
        return [{"id": r.id, "url": r.url, "secret": r.secret, "event_types": json.loads(r.event_types)}
                for r in rows]
