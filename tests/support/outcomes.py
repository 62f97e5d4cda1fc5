"""A plan that bills each conversation once when it is resolved, not if it is reopened
within two days (a ``unique_count`` meter with ``disputes``), shared by the pure and the
ledger tests of that rule."""

from __future__ import annotations

CONVERSATIONS_YAML = """
plan: conversations
name: Resolved conversations, each billed once
effective_from: 2026-01-01T00:00:00Z
meters:
  - key: resolved
    event_type: conversation.resolved
    aggregation: unique_count
    property: conversation_id
    disputes: {window_days: 2, id_property: conversation_id, dispute_types: [conversation.reopened]}
charges:
  - {key: resolved, meter: resolved, price: {model: per_unit, unit_price: "1.50"}}
"""


def conversation_event(i: int, type_: str, day: int, hour: int, conversation: str) -> dict:
    return {"id": f"v{i}", "type": type_, "timestamp": f"2026-10-{day:02d}T{hour:02d}:00:00Z",
            "properties": {"conversation_id": conversation}}


# a: resolved, reopened inside the window, resolved again: billed once
# b: resolved twice: billed once
# c: resolved, reopened inside the window: not billed
# d: resolved, reopened after the window: billed
SCENARIO = [
    conversation_event(1, "conversation.resolved", 2, 12, "a"),
    conversation_event(2, "conversation.reopened", 3, 18, "a"),
    conversation_event(3, "conversation.resolved", 5, 9, "a"),
    conversation_event(4, "conversation.resolved", 3, 10, "b"),
    conversation_event(5, "conversation.resolved", 4, 10, "b"),
    conversation_event(6, "conversation.resolved", 6, 10, "c"),
    conversation_event(7, "conversation.reopened", 7, 10, "c"),
    conversation_event(8, "conversation.resolved", 8, 10, "d"),
    conversation_event(9, "conversation.reopened", 12, 10, "d"),
]
SCENARIO_BILLED = 3  # a, b, d
