"""Shared by every test module: the CLI's process-wide caches (settings, engines, the plan
catalog) start empty in each test, so a test that points the CLI at another database or
plans directory never leaks into the next one."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fresh_cli_caches():
    from billing.cli import context
    from billing.config import get_settings
    from billing.ledger.db import engine_for

    caches = (get_settings, engine_for, context.catalog)
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()
