"""One rule for the body's media type on every route (the fast path included): JSON.

A POST, PUT or PATCH whose ``Content-Type`` is ``application/json`` or ``application/*+json``
(any parameters, e.g. ``; charset=utf-8``) is served; one without a ``Content-Type`` is served
as JSON (the header is added, so every route parses the body alike); any other type is
refused with 415 ``unsupported_media_type`` before authentication, whatever the route.
"""

from __future__ import annotations

from collections.abc import Callable

from billing.api.errors import error_response
from billing.errors import ErrorCode

_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_JSON_HEADER = (b"content-type", b"application/json")


def is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class JsonBodies:
    """The ASGI layer (``BillingAPI.add_layer(JsonBodies)``)."""

    def __init__(self, app: Callable):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in _WITH_BODY:
            await self.app(scope, receive, send)
            return
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
                break
        if content_type is None:
            scope = {**scope, "headers": [*scope["headers"], _JSON_HEADER]}
        elif not is_json(content_type):
            shown = content_type.decode("latin-1")[:100]
            response = error_response(str(ErrorCode.UNSUPPORTED_MEDIA_TYPE),
                                      f"the body must be JSON: send Content-Type: application/json "
                                      f"(or no Content-Type), not {shown!r}", param="Content-Type", scope=scope)
            await _drain(receive)  # the connection stays usable for the next request
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _drain(receive: Callable) -> None:
    """Read and drop the request body."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
