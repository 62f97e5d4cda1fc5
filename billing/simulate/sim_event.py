"""A light usage event for simulations: the attributes and methods of
``billing.events.UsageEvent`` that rating and costing read, without pydantic's per-object
cost (simulations build hundreds of thousands). Only for trusted input: our own synthetic
output, ledger rows (validated at ingestion) or already-parsed ``UsageEvent`` objects."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from billing.money import to_decimal


class SimEvent:
    __slots__ = ("id", "customer", "type", "timestamp", "properties")

    def __init__(self, id: str, customer: str, type: str, timestamp: datetime, properties: dict[str, Any]):
        self.id = id
        self.customer = customer
        self.type = type
        self.timestamp = timestamp
        self.properties = properties

    def number(self, key: str, default: Decimal | None = None) -> Decimal | None:
        value = self.properties.get(key)
        return default if value is None else to_decimal(value)

    def canonical(self) -> str:
        return json.dumps({"customer": self.customer, "type": self.type, "timestamp": self.timestamp.isoformat(),
                           "properties": self.properties}, sort_keys=True, separators=(",", ":"), default=str)

    def replace(self, **properties: Any) -> "SimEvent":
        """A copy with some properties changed."""
        return SimEvent(self.id, self.customer, self.type, self.timestamp, {**self.properties, **properties})

    def __repr__(self) -> str:
        return f"SimEvent({self.id!r}, {self.customer!r}, {self.type!r}, {self.timestamp.isoformat()}, {self.properties!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SimEvent) and self.id == other.id and self.customer == other.customer
                and self.type == other.type and self.timestamp == other.timestamp
                and self.properties == other.properties)

    __hash__ = None  # type: ignore[assignment]
