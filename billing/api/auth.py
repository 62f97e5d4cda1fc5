"""API keys: created once (the secret is shown only then), stored as SHA-256 hashes.

A key looks like ``bk_<id>_<secret>``; the ``id`` part is public (listing, revoking).
Scopes: ``ingest`` (send events), ``check`` (quota check/reserve/commit/release and the
customer's usage), ``read`` (usage, invoices, plans, customers), ``admin`` (everything,
including customers and subscriptions). A key created with ``customer`` can only touch
that customer's data (403 ``forbidden`` otherwise; another customer's invoice is the same
404 whether it exists or not).

Revocation: a server caches a key it looked up for ``BILLING_KEY_CACHE_SECONDS`` (1 s). A
key revoked through a server (``DELETE /v1/keys/{id}``, ``KeyStore.revoke``) is refused by
that server at once; every other server (and any server, after ``billing keys revoke``)
refuses it within the cache time.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update

from billing.errors import BillingError, ErrorCode
from billing.store.operational_models import ApiKey
from billing.store.types import to_us

SCOPES = ("ingest", "check", "read", "admin")
_table = ApiKey.__table__


@dataclass(frozen=True)
class Principal:
    key_id: str
    scope: str
    customer: str | None = None

    def allows(self, *scopes: str) -> bool:
        return self.scope == "admin" or self.scope in scopes

    def require_customer(self, customer: str | None) -> None:
        """403 unless this key may act on ``customer``."""
        if self.customer is not None and customer != self.customer:
            raise BillingError("this API key is restricted to another customer", code=ErrorCode.FORBIDDEN)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()  # a bad key never matches; no 500


def create_key(engine: Engine, scope: str, *, customer: str | None = None, name: str = "",
               now: datetime | None = None) -> tuple[str, str]:
    """Create a key; return (key id, the full key — shown only now)."""
    from billing.ledger.accounts import check_customer_id, check_text

    if scope not in SCOPES:
        raise BillingError(f"scope must be one of {', '.join(SCOPES)}", code=ErrorCode.VALIDATION)
    if customer is not None:
        check_customer_id(customer)
    check_text("name", name, 200)
    key_id = secrets.token_hex(6)
    key = f"bk_{key_id}_{secrets.token_urlsafe(24)}"
    with engine.begin() as conn:
        conn.execute(_table.insert().values(id=key_id, key_hash=hash_key(key), scope=scope, customer_id=customer,
                                            name=name, created_at=to_us(now or datetime.now(UTC))))
    return key_id, key


def list_keys(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(_table.c.id, _table.c.scope, _table.c.customer_id, _table.c.name,
                                   _table.c.created_at, _table.c.revoked_at).order_by(_table.c.created_at)).all()
    return [dict(r._mapping) for r in rows]


_KEY_ID = re.compile(r"[0-9a-f]{12}")  # what create_key makes


def revoke_key(engine: Engine, key_id: str, now: datetime | None = None) -> bool:
    """Revoke an active key; False when there is none with that id. Servers that cached
    it refuse it within their cache time (``KeyStore.revoke`` also forgets it at once)."""
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        return False
    with engine.begin() as conn:
        return conn.execute(update(_table).where(_table.c.id == key_id, _table.c.revoked_at.is_(None))
                            .values(revoked_at=to_us(now or datetime.now(UTC)))).rowcount == 1


def is_revoked(engine: Engine, key_id: str) -> bool:
    """Whether a key with this id exists and is revoked."""
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        return False
    with engine.connect() as conn:
        return conn.execute(select(_table.c.id).where(_table.c.id == key_id,
                                                      _table.c.revoked_at.is_not(None))).first() is not None


class KeyStore:
    """Looks keys up by hash, caching hits for ``ttl`` seconds: a key revoked elsewhere is
    refused within ``ttl``; one revoked through ``revoke`` at once."""

    def __init__(self, engine: Engine, ttl: float = 1.0):
        self.engine = engine
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()
        self._generation = 0  # moves on every forget: a lookup that raced a revocation is not cached

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise BillingError("missing API key (Authorization: Bearer <key>)", code=ErrorCode.UNAUTHENTICATED)
        digest = hash_key(key)
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        generation = self._generation
        with self.engine.connect() as conn:
            row = conn.execute(select(_table.c.id, _table.c.scope, _table.c.customer_id)
                               .where(_table.c.key_hash == digest, _table.c.revoked_at.is_(None))).first()
        if row is None:
            raise BillingError("invalid or revoked API key", code=ErrorCode.UNAUTHENTICATED)
        principal = Principal(row.id, row.scope, row.customer_id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            if generation == self._generation:
                self._cache[digest] = (time.monotonic() + self.ttl, principal)
        return principal

    def revoke(self, key_id: str, now: datetime | None = None) -> bool:
        """Revoke a key and forget it here (this server refuses it from now on)."""
        revoked = revoke_key(self.engine, key_id, now)
        self.forget(key_id)
        return revoked

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._generation += 1
            for digest in [d for d, (_, p) in self._cache.items() if p.key_id == key_id]:
                del self._cache[digest]
