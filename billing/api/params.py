"""Unknown query parameters are refused: 400 ``parameter_unknown`` naming the parameter.

A typo (``?custmer=acme``) would otherwise be ignored and answer for every customer. Every
route of the app runs ``reject_unknown_query`` first (``create_app`` passes it as an app
dependency); the names a route takes are read once from its own declaration. The fast path
(``billing.api.fastpath``) refuses any query string, as its routes take none.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import Request

from billing.errors import BillingError, ErrorCode


def _names(route) -> frozenset[str]:
    names = getattr(route, "_query_names", None)
    if names is None:
        names = frozenset(_query_names(route.dependant))
        route._query_names = names
    return names


def _query_names(dependant) -> list[str]:
    """The query parameters of a route's dependant and of all its dependencies."""
    names = [p.alias for p in dependant.query_params]
    for sub in dependant.dependencies:
        names += _query_names(sub)
    return names


async def reject_unknown_query(request: Request) -> None:
    query = request.scope.get("query_string")
    if not query:
        return
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    allowed = _names(route)
    for name, _value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name not in allowed:
            takes = ", ".join(sorted(allowed)) or "none"
            raise BillingError(f"unknown query parameter {name!r} (this route takes: {takes})",
                               code=ErrorCode.PARAMETER_UNKNOWN, param=name)
