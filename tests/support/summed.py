"""The summed plan (100 units included, then block) in a catalog with the test plans: the
quota's commit-retry tests and the API's idempotency / late-commit / media tests share it."""

from __future__ import annotations

from billing.catalog import Catalog, parse_plan_text
from tests.support.quota import catalog

SUMMED_PLAN = """
plan: summed
name: 100 units included, then block
effective_from: 2026-01-01T00:00:00Z
meters:
  - {key: units, event_type: request, aggregation: sum, property: units}
charges:
  - key: units
    meter: units
    included: {pooled: 100}
    on_exhaustion: {policy: block}
"""

CAT = Catalog([*catalog().all(), parse_plan_text(SUMMED_PLAN, "summed.yaml")])

