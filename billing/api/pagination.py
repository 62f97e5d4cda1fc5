"""Cursor pagination of every ``GET /v1/<list>`` (Stripe's list object).

- ``limit``: 1 to 100 rows (default 10); ``starting_after`` / ``ending_before``: a cursor
  from a previous page (its ``next_cursor`` / ``previous_cursor``), at most one of them.
- The answer: ``{"object": "list", "url", "data": [...], "has_more", "next_cursor",
  "previous_cursor"}`` in the list's one order, (created, id) ascending
  (``billing.store.pages``). ``has_more``: rows beyond this page in the direction walked.
  ``next_cursor`` is the last row's cursor, ``previous_cursor`` the first's (None on an
  empty page).
- A cursor is opaque (base64url of the list's name and the row's key) and stays valid
  while rows are added or removed. A ``limit`` outside 1..100, a cursor that is not one of
  this list's, both cursors at once: 400 ``parameter_invalid``; a query parameter the route
  does not take: 400 ``parameter_unknown``; each naming the ``param``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, Query, Request
from pydantic import BaseModel, Field

from billing.errors import BillingError, ErrorCode
from billing.store.pages import Key, Page

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
MAX_CURSOR = 600  # characters
_MAX_US = 2 ** 62
_MAX_ID = 2 ** 63 - 1


def param_error(param: str, message: str, code: ErrorCode = ErrorCode.PARAMETER_INVALID) -> BillingError:
    """400 naming the query parameter (``param``)."""
    return BillingError(f"{param}: {message}", code=code, param=param)


from billing.api.errors import error_responses  # noqa: E402,F401  (the list routes' responses=)


LIST_ERRORS = (ErrorCode.PARAMETER_INVALID, ErrorCode.PARAMETER_UNKNOWN, ErrorCode.VALIDATION,
               ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN)


def encode(list_name: str, key: Key) -> str:
    raw = orjson.dumps([list_name, key.created_us, key.id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(list_name: str, param: str, cursor: str, id_type: type) -> Key:
    """The key a cursor of ``list_name`` holds; 400 naming ``param`` for anything else."""
    bad = param_error(param, "not a cursor of this list (pass a next_cursor or previous_cursor it returned)")
    if not 1 <= len(cursor) <= MAX_CURSOR or not cursor.isascii():
        raise bad
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise bad from None
    if not (isinstance(value, list) and len(value) == 3 and value[0] == list_name):
        raise bad
    _, created, row_id = value
    if type(created) is not int or not -_MAX_US <= created <= _MAX_US:
        raise bad
    if id_type is int and not (type(row_id) is int and 0 <= row_id <= _MAX_ID):
        raise bad
    if id_type is str and not (type(row_id) is str and 1 <= len(row_id) <= 200):
        raise bad
    return Key(created, row_id)


@dataclass(frozen=True)
class PageParams:
    limit: int
    after: Key | None
    before: Key | None


from billing.api.params import reject_unknown_query  # noqa: E402


def page_params(list_name: str, id_type: type = int) -> Callable[..., PageParams]:
    """The dependency of a list route: unknown parameters refused, then the page's."""

    def dependency(
        _known: Annotated[None, Depends(reject_unknown_query)],
        limit: Annotated[str | None, Query(description=f"Rows per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})",
                                           examples=["10"])] = None,
        starting_after: Annotated[str | None, Query(description="A cursor: the page after it (next_cursor)")] = None,
        ending_before: Annotated[str | None, Query(
            description="A cursor: the page before it (previous_cursor)")] = None,
    ) -> PageParams:
        if limit is None:
            n = DEFAULT_LIMIT
        else:
            text = limit.strip()
            if not (text.isascii() and text.isdigit() and len(text) <= 6 and 1 <= int(text) <= MAX_LIMIT):
                raise param_error("limit", f"a whole number from 1 to {MAX_LIMIT}, got {limit[:40]!r}")
            n = int(text)
        if starting_after is not None and ending_before is not None:
            raise param_error("ending_before", "give starting_after or ending_before, not both")
        after = decode(list_name, "starting_after", starting_after, id_type) if starting_after is not None else None
        before = decode(list_name, "ending_before", ending_before, id_type) if ending_before is not None else None
        return PageParams(n, after, before)

    return dependency


class ListObject(BaseModel):
    """Stripe's list object; each list's model adds ``data``."""

    object: Literal["list"] = "list"
    url: str = Field(examples=["/v1/customers"])
    has_more: bool
    next_cursor: str | None = Field(description="starting_after for the next page (the last row's cursor)")
    previous_cursor: str | None = Field(description="ending_before for the page before (the first row's cursor)")


def list_object(request: Request, list_name: str, page: Page, data: list[Any]) -> dict[str, Any]:
    return {"object": "list", "url": request.url.path, "data": data, "has_more": page.has_more,
            "next_cursor": encode(list_name, page.keys[-1]) if page.keys else None,
            "previous_cursor": encode(list_name, page.keys[0]) if page.keys else None}


def customer_filter(principal: Any, customer: str | None) -> str | None:
    """The customer a list is restricted to: the one asked for, and for a key restricted to
    one customer always that one (403 ``forbidden`` when it asks for another)."""
    if principal.customer is None:
        return customer
    if customer is not None:
        principal.require_customer(customer)
    return principal.customer
