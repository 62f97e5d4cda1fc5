"""API keys over HTTP: ``GET /v1/keys`` and ``DELETE /v1/keys/{key_id}`` (revoke).

An admin key that is not restricted to a customer manages keys (keys are created with
`billing keys create`, where the secret can be shown once). A revocation through a server
takes effect on that server at once and on the others within ``BILLING_KEY_CACHE_SECONDS``
(``billing.api.auth.KeyStore``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from billing.api.auth import Principal, is_revoked, list_keys
from billing.api.responses import KeyRevoked, KeysOut, documented
from billing.api.routes import Admin
from billing.errors import BillingError, ErrorCode

router = APIRouter(prefix="/v1/keys", tags=["keys"])


def _unrestricted(principal: Principal) -> None:
    if principal.customer is not None:
        raise BillingError("keys are managed with an admin key that is not restricted to a customer",
                           code=ErrorCode.FORBIDDEN)


def _iso_us(value: int | None) -> str | None:
    from billing.store.types import from_us

    return None if value is None else from_us(value).isoformat().replace("+00:00", "Z")


@router.get("", summary="Every API key (ids, scopes, customers; never the keys)", **documented(KeysOut))
def get_keys(request: Request, principal: Admin) -> dict[str, Any]:
    _unrestricted(principal)
    rows = list_keys(request.app.state.services.engine)
    return {"keys": [{"id": r["id"], "scope": r["scope"], "customer": r["customer_id"], "name": r["name"],
                      "created_at": _iso_us(r["created_at"]), "revoked_at": _iso_us(r["revoked_at"])}
                     for r in rows]}


@router.delete("/{key_id}", summary="Revoke a key (idempotent): refused here at once, elsewhere within the key cache time",
               **documented(KeyRevoked, ErrorCode.NOT_FOUND))
def revoke(key_id: Annotated[str, Path(max_length=40)], request: Request, principal: Admin) -> dict[str, Any]:
    _unrestricted(principal)
    services = request.app.state.services
    # a retry (the first answer lost) gets the same answer: the key is revoked
    if not request.app.state.keys.revoke(key_id, services.clock()) and not is_revoked(services.engine, key_id):
        raise BillingError(f"no key {key_id!r}", code=ErrorCode.NOT_FOUND)
    return {"id": key_id, "revoked": True}
