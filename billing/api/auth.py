"""API keys: created once (the secret is shown only then), stored as SHA-256 hashes.

A key looks like ``bk_<id>_<secret>``; the ``id`` part is public (listing, revoking).
Scopes: ``ingest`` (send events), ``check`` (quota check/reserve/commit/release and the
customer's usage), ``read`` (usage, invoices, plans, customers), ``admin`` (everything,
including customers and subscriptions). A key created with ``customer`` can only touch
that customer's data (403 ``forbidden`` otherwise).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select, update

from billing.errors import BillingError, ErrorCode
from billing.ledger.quota_models import ApiKey
from billing.ledger.types import to_us

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
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(engine: Engine, scope: str, *, customer: str | None = None, name: str = "",
               now: datetime | None = None) -> tuple[str, str]:
    """Create a key; return (key id, the full key — shown only now)."""
    if scope not in SCOPES:
        raise BillingError(f"scope must be one of {', '.join(SCOPES)}", code=ErrorCode.VALIDATION)
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


def revoke_key(engine: Engine, key_id: str, now: datetime | None = None) -> bool:
    with engine.begin() as conn:
        return conn.execute(update(_table).where(_table.c.id == key_id, _table.c.revoked_at.is_(None))
                            .values(revoked_at=to_us(now or datetime.now(UTC)))).rowcount == 1


class KeyStore:
    """Looks keys up by hash, caching hits for ``ttl`` seconds (a revocation takes effect
    within ``ttl``)."""

    def __init__(self, engine: Engine, ttl: float = 5.0):
        self.engine = engine
        self.ttl = ttl
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise BillingError("missing API key (Authorization: Bearer <key>)", code=ErrorCode.UNAUTHENTICATED)
        digest = hash_key(key)
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        with self.engine.connect() as conn:
            row = conn.execute(select(_table.c.id, _table.c.scope, _table.c.customer_id)
                               .where(_table.c.key_hash == digest, _table.c.revoked_at.is_(None))).first()
        if row is None:
            raise BillingError("invalid or revoked API key", code=ErrorCode.UNAUTHENTICATED)
        principal = Principal(row.id, row.scope, row.customer_id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (time.monotonic() + self.ttl, principal)
        return principal
