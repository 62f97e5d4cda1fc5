"""The client in-process (``LocalClient``) and over HTTP (``HttpClient`` on the app), with
the customers of ``tests.support.client`` subscribed and a fixed clock."""

from __future__ import annotations

import pytest

from tests.support.client import make_env


@pytest.fixture(params=["local", "http"])
def env(request, sqlite_engine, tmp_path):
    """The client in-process and over HTTP, on SQLite."""
    return make_env(request.param, sqlite_engine, tmp_path)


@pytest.fixture(params=["local", "http"])
def any_env(request, any_engine, tmp_path):
    """The client in-process and over HTTP, on SQLite and on PostgreSQL."""
    return make_env(request.param, any_engine, tmp_path)
