"""``POST /v1/quota/reserve``, ``/commit`` and ``/release`` on the raw ASGI fast path
(``billing.api.fastpath``): every LLM call an app guards makes a reserve and a commit, and
FastAPI's stack (its routing, dependency and response layers, a Request object) cost more
CPU than the writes themselves. The routes in ``billing.api.routes`` stay the documented
ones (OpenAPI); these handlers answer the same requests with the same bodies, the same
scopes and the same errors: authentication and the body model inline (as
``routes.check_decision``), then the same ``Quota`` call, all in one worker thread. The
``Idempotency-Key`` layer is in front of both (``BillingAPI.add_layer``); for these routes it
claims the key, runs the handler and stores its answer in that same thread hop
(``BillingAPI.fast_sync``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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


def reserve(app: Any, scope: dict, body: bytes) -> Answer:
    """``routes.quota_reserve`` (blocking: in a worker thread)."""
    principal = _principal(app, scope)
    req = _body(ReserveIn, body)
    principal.require_customer(req.customer)
    r = app.state.services.quota.reserve(
        req.customer, req.key, req.quantity, ttl=req.ttl_seconds, request_id=req.request_id, model=req.model,
        task=req.task, tokens=req.tokens, cost=req.cost, steps=req.steps, retry=req.retry, depth=req.depth,
        properties=req.properties).to_json()
    count_decision(app.state, r["decision"])
    retry = _retry_after(r["decision"])
    return 200, _json(r), [] if retry is None else [(b"retry-after", retry.encode())]


def commit(app: Any, scope: dict, body: bytes) -> Answer:
    """``routes.quota_commit``."""
    principal = _principal(app, scope)
    req = _body(CommitIn, body)
    with _foreign_reservation_unknown(principal, req.reservation_id):
        return 200, _json(app.state.services.quota.commit(req.reservation_id, req.event,
                                                          customer=principal.customer)), []


def release(app: Any, scope: dict, body: bytes) -> Answer:
    """``routes.quota_release``."""
    principal = _principal(app, scope)
    req = _body(ReleaseIn, body)
    with _foreign_reservation_unknown(principal, req.reservation_id):
        return 200, _json(app.state.services.quota.release(req.reservation_id, customer=principal.customer)), []


def _in_thread(handler: Callable[[Any, dict, bytes], Answer]) -> Callable[[Any, dict, bytes], Awaitable[Answer]]:
    async def fast(app: Any, scope: dict, body: bytes) -> Answer:
        return await run_in_threadpool(handler, app, scope, body)
    fast.__doc__ = handler.__doc__
    return fast


SYNC = {("POST", "/v1/quota/reserve"): reserve, ("POST", "/v1/quota/commit"): commit,
        ("POST", "/v1/quota/release"): release}
ROUTES = {route: _in_thread(handler) for route, handler in SYNC.items()}
