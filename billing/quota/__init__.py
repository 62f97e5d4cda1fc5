"""Quota decisions (pure): plan + usage state + request -> allow / downgrade / deny."""

from billing.quota.decide import (
    Decision, Lane, MeterUsage, QuotaRequest, TaskUsage, UnknownMeter, UsageState, decide, rate_window)

__all__ = ["Decision", "Lane", "MeterUsage", "QuotaRequest", "TaskUsage", "UnknownMeter", "UsageState", "decide",
           "rate_window"]
