"""Record mapped items through the one ingestion service and answer per position."""

from __future__ import annotations

from typing import Any

from billing.api.formats import Refused


def record_mapped(ledger: Any, items: list[dict | Refused]) -> dict[str, Any]:
    """``Ledger.record`` the events among ``items``; the answer is ``POST /v1/events``'s
    (counts and a result per item, ``index`` its position), an item the mapping refused
    being its own rejection (its code, a message naming the field)."""
    positions = [i for i, item in enumerate(items) if not isinstance(item, Refused)]
    result = ledger.record([items[i] for i in positions])
    out = result.to_json()
    out.pop("errors", None)
    results: list[dict[str, Any] | None] = [None] * len(items)
    for position, recorded in zip(positions, result.results):
        results[position] = {**recorded.to_json(), "index": position}
    for i, item in enumerate(items):
        if isinstance(item, Refused):
            results[i] = {"index": i, "id": item.id, "customer": item.customer, "status": "rejected",
                          "code": str(item.code), "message": item.message}
    out["rejected"] += len(items) - len(positions)
    out["results"] = results
    return out
