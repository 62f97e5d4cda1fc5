"""``POST /v1/quota/reserve``, ``/commit`` and ``/release`` on the raw ASGI fast path
(``billing.api.fastpath``): every LLM call an app guards makes a reserve and a commit, and
FastAPI's stack (its routing, dependency and response layers, a Request object) cost more
CPU than the writes themselves. The routes in ``billing.api.routes`` stay the documented
ones (OpenAPI); these handlers answer the same requests with the same bodies, the same
scopes and the same errors: authentication and the body model inline (as
``routes.check_decision``), then the same ``Quota`` call in a worker thread. The
``Idempotency-Key`` layer is in front of both (``BillingAPI.add_layer``).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from billing.api.auth import Principal
from billing.api.routes import _api_key, _foreign_reservation_unknown, _retry_after
from billing.api.schemas import CommitIn, ReleaseIn, ReserveIn
from billing.api.telemetry import count_decision
from billing.errors import BillingError, ErrorCode

Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]


def _principal(app: Any, scope: dict) -> Principal:
    """The request's API key (``Authorization: Bearer``, else ``X-API-Key``; the first of
    each header), allowed the ``check`` scope."""
    auth = api_key = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if auth is None:
                auth = value.decode("latin-1")
        elif name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1")
    principal = app.state.keys.authenticate(_api_key(auth, api_key))
    if not principal.allows("check"):
        raise BillingError(f"this API key's scope ({principal.scope}) does not allow this; needs check",
                           code=ErrorCode.FORBIDDEN)
    return principal


def _body(model: type[BaseModel], body: bytes) -> Any:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:  # as FastAPI reports a body that fails its model
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors(include_url=False)]) from None


def _json(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)


async def reserve_fast(app: Any, scope: dict, body: bytes) -> Answer:
    """``routes.quota_reserve``."""
    principal = _principal(app, scope)
    req = _body(ReserveIn, body)
    principal.require_customer(req.customer)
    quota = app.state.services.quota
    r = (await run_in_threadpool(
        lambda: quota.reserve(req.customer, req.key, req.quantity, ttl=req.ttl_seconds, request_id=req.request_id,
                              model=req.model, task=req.task, tokens=req.tokens, cost=req.cost, steps=req.steps,
                              retry=req.retry, depth=req.depth, properties=req.properties))).to_json()
    count_decision(app.state, r["decision"])
    retry = _retry_after(r["decision"])
    return 200, _json(r), [] if retry is None else [(b"retry-after", retry.encode())]


async def commit_fast(app: Any, scope: dict, body: bytes) -> Answer:
    """``routes.quota_commit``."""
    principal = _principal(app, scope)
    req = _body(CommitIn, body)
    quota = app.state.services.quota

    def commit() -> dict[str, Any]:
        with _foreign_reservation_unknown(principal, req.reservation_id):
            return quota.commit(req.reservation_id, req.event, customer=principal.customer)
    return 200, _json(await run_in_threadpool(commit)), []


async def release_fast(app: Any, scope: dict, body: bytes) -> Answer:
    """``routes.quota_release``."""
    principal = _principal(app, scope)
    req = _body(ReleaseIn, body)
    quota = app.state.services.quota

    def release() -> dict[str, Any]:
        with _foreign_reservation_unknown(principal, req.reservation_id):
            return quota.release(req.reservation_id, customer=principal.customer)
    return 200, _json(await run_in_threadpool(release)), []


ROUTES = {("POST", "/v1/quota/reserve"): reserve_fast, ("POST", "/v1/quota/commit"): commit_fast,
          ("POST", "/v1/quota/release"): release_fast}
