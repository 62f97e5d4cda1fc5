"""The statements that add to running totals, one text for every writer: usage counters
(ingestion, quota commits, recount) and agent task usage (quota commits, events sent
directly). Totals are exact integers of any size, kept as (carry, low) column pairs
(``billing.store.wide``): a row's parameters come from ``counter_row`` / ``task_row``.
"""

from __future__ import annotations

from functools import lru_cache

from billing.store.wide import add_sql, max_sql, split

COUNTER_COLUMNS = ("customer_id, meter, period_start, period_end, units_micro, units_carry, events, cost_pico, "
                   "cost_carry")
TASK_COLUMNS = "customer_id, task_id, steps, tokens, tokens_carry, cost_pico, cost_carry, updated_at"


def counter_update(is_max: bool) -> str:
    """The ``DO UPDATE SET`` of a counter upsert: add the units (``max`` meters: keep the
    greater), the events and the cost."""
    units = (max_sql if is_max else add_sql)("usage_counter", "units_micro", "units_carry")
    return (f"{units}, events = usage_counter.events + excluded.events, "
            f"{add_sql('usage_counter', 'cost_pico', 'cost_carry')}")


@lru_cache(maxsize=8)
def counter_upsert(ph: str, is_max: bool) -> str:
    """One counter row's upsert (``ph``: the driver's placeholder), parameters ``counter_row``."""
    return (f"INSERT INTO usage_counter ({COUNTER_COLUMNS}) VALUES ({','.join([ph] * 9)}) "
            f"ON CONFLICT (customer_id, meter, period_start) DO UPDATE SET {counter_update(is_max)}")


def counter_row(customer: str, meter: str, start: int, end: int, units: int, events: int, cost: int) -> tuple:
    """``counter_upsert``'s parameters for a delta of exact integers (of any size)."""
    units_carry, units_low = split(units)
    cost_carry, cost_low = split(cost)
    return (customer, meter, start, end, units_low, units_carry, events, cost_low, cost_carry)


TASK_UPDATE = ("steps = agent_task_usage.steps + excluded.steps, "
               f"{add_sql('agent_task_usage', 'tokens', 'tokens_carry')}, "
               f"{add_sql('agent_task_usage', 'cost_pico', 'cost_carry')}, updated_at = excluded.updated_at")


@lru_cache(maxsize=4)
def task_upsert(ph: str) -> str:
    """One agent task's usage upsert (``ph``: the driver's placeholder), parameters ``task_row``."""
    return (f"INSERT INTO agent_task_usage ({TASK_COLUMNS}) VALUES ({','.join([ph] * 8)}) "
            f"ON CONFLICT (customer_id, task_id) DO UPDATE SET {TASK_UPDATE}")


def task_row(customer: str, task: str, steps: int, tokens: int, cost: int, now_us: int) -> tuple:
    """``task_upsert``'s parameters for a delta of exact integers (of any size)."""
    tokens_carry, tokens_low = split(tokens)
    cost_carry, cost_low = split(cost)
    return (customer, task, steps, tokens_low, tokens_carry, cost_low, cost_carry, now_us)
