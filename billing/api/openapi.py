"""The OpenAPI document's shared parts, added once to every operation (``install``).

* Security: ``bearerAuth`` (``Authorization: Bearer <key>``) or ``apiKeyAuth``
  (``X-API-Key: <key>``), the two ways ``billing.api.routes._api_key`` reads a key; every
  operation but the ``PUBLIC`` ones requires one (the Authorize button of ``/docs``).
* The error answers every route may give besides its own (``error_responses`` on the route):
  401/403 where a key is needed, 400 ``parameter_unknown``, 413 and 415 where a body is read,
  the Idempotency-Key errors on POST, 500 and 503; FastAPI's default 422 schema is replaced by
  the error body (``billing.api.errors.ErrorBody``).
* ``UsageEvent``: the event's JSON Schema (``billing/schemas/usage_event.schema.json``), as
  a component the events body refers to.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from billing.api.errors import ErrorBody, ErrorDetail, error_responses
from billing.api.responses import EventsQueued
from billing.errors import ErrorCode

PUBLIC = frozenset({("get", "/healthz"), ("get", "/metrics"), ("post", "/v1/stripe/webhook")})
SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer",
                   "description": "An API key (`billing keys create`): `Authorization: Bearer bk_...`"},
    "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                   "description": "The same API key in the `X-API-Key` header"},
}
_BODY = frozenset({"post", "put", "patch"})
_REF = "#/components/schemas/"


def event_schemas() -> dict[str, dict[str, Any]]:
    """``UsageEvent`` and its definitions (``UsageEvent<Name>``), as OpenAPI 3.1 components."""
    text = resources.files("billing.schemas").joinpath("usage_event.schema.json").read_text()
    text = re.sub(r'"#/\$defs/(\w)', lambda m: f'"{_REF}UsageEvent{m.group(1).upper()}', text)
    schema = json.loads(text)
    schema.pop("$schema", None)
    schema.pop("$id", None)
    out = {f"UsageEvent{name[:1].upper()}{name[1:]}": sub for name, sub in schema.pop("$defs", {}).items()}
    out["UsageEvent"] = schema
    return out


def _common(method: str, path: str) -> dict[str, dict[str, Any]]:
    codes: list[ErrorCode] = [ErrorCode.PARAMETER_UNKNOWN, ErrorCode.INTERNAL, ErrorCode.UNAVAILABLE]
    if (method, path) not in PUBLIC:
        codes += [ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN]
    if method in _BODY:
        codes += [ErrorCode.REQUEST_TOO_LARGE, ErrorCode.UNSUPPORTED_MEDIA_TYPE]
    if method == "post":
        codes += [ErrorCode.IDEMPOTENCY_KEY_INVALID, ErrorCode.IDEMPOTENCY_KEY_REUSED, ErrorCode.IDEMPOTENCY_KEY_IN_USE]
    return {str(status): answer for status, answer in error_responses(*codes).items()}


def _merge(responses: dict[str, Any], common: dict[str, dict[str, Any]]) -> None:
    """Add the ``common`` error answers to an operation's; every error answer is the JSON
    error body (also where FastAPI put the route's media type or its 422 schema)."""
    for status, answer in common.items():
        mine = responses.setdefault(status, {"description": answer["description"]})
        known = mine.get("description", "")
        if known.startswith("codes: "):
            extra = [c for c in answer["description"].removeprefix("codes: ").split(", ") if c not in known]
            mine["description"] = ", ".join([known, *extra])
        else:
            mine["description"] = answer["description"]
    for status, mine in responses.items():
        if status[0] in "45":
            example = next((media["example"] for media in mine.get("content", {}).values() if "example" in media),
                           None) or common.get(status, {}).get("content", {}).get("application/json", {}).get(
                               "example") or error_responses()[422]["content"]["application/json"]["example"]
            mine["content"] = {"application/json": {"schema": {"$ref": f"{_REF}ErrorBody"}, "example": example}}


def _models(cls: type = BaseModel):
    for sub in cls.__subclasses__():
        yield sub
        yield from _models(sub)


def _restore_examples(schemas: dict[str, Any]) -> None:
    """The models' examples as written: FastAPI drops their null values, which a required
    nullable field needs (``"ended_at": null``)."""
    for model in _models():
        if model.__module__.startswith("billing.api.") and model.__name__ in schemas:
            extra = model.model_config.get("json_schema_extra")
            if isinstance(extra, dict) and "examples" in extra:
                schemas[model.__name__]["examples"] = extra["examples"]


def document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document with the shared parts above."""
    doc = get_openapi(title=app.title, version=app.version, openapi_version=app.openapi_version,
                      description=app.description, routes=app.routes)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ErrorDetail"] = ErrorDetail.model_json_schema(ref_template=_REF + "{model}")
    body = ErrorBody.model_json_schema(ref_template=_REF + "{model}")
    body.pop("$defs", None)
    schemas["ErrorBody"] = body
    schemas.update(event_schemas())
    schemas["EventsQueued"] = EventsQueued.model_json_schema(ref_template=_REF + "{model}")
    _restore_examples(schemas)
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            if (method, path) not in PUBLIC:
                operation["security"] = [{"bearerAuth": []}, {"apiKeyAuth": []}]
            _merge(operation.setdefault("responses", {}), _common(method, path))
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused in schemas and f'"{_REF}{unused}"' not in json.dumps(doc["paths"]):
            del schemas[unused]
    return doc


def install(app: FastAPI) -> None:
    """Serve ``document(app)`` as the app's ``/openapi.json`` (built once)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
