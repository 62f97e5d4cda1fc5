"""Safety of the schema commands: `billing db downgrade` needs a target and a confirmation,
and a command run against a database that is not migrated (or is behind) says so in one
line naming `billing db upgrade`, never with a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from billing.store.db import downgrade, head_revision, upgrade
from tests.support.ledger import _cli_env


def _billing(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "billing", *args], env=_cli_env(url), input=stdin,
                          capture_output=True, text=True, timeout=120)


def _tables(url: str) -> set[str]:
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'billing.db'}"


def test_downgrade_needs_a_target(sqlite_url):
    upgrade(sqlite_url)
    out = _billing(sqlite_url, "db", "downgrade")
    assert out.returncode == 2 and "revision" in out.stderr.lower() and "Missing argument" in out.stderr
    assert "usage_event" in _tables(sqlite_url)


def test_downgrade_asks_and_without_a_terminal_needs_yes(sqlite_url):
    upgrade(sqlite_url)
    out = _billing(sqlite_url, "db", "downgrade", "base", stdin="y\n")  # not a terminal: no prompt to answer
    assert out.returncode == 2 and "--yes" in out.stderr and "drop every table" in out.stderr, out.stderr
    assert "usage_event" in _tables(sqlite_url)
    out = _billing(sqlite_url, "db", "downgrade", "base", "--yes")
    assert out.returncode == 0, out.stderr
    assert "usage_event" not in _tables(sqlite_url)


@pytest.mark.parametrize("state", ["empty", "behind"])
def test_a_command_on_an_unmigrated_database_says_so_in_one_line(sqlite_url, state):
    if state == "behind":
        upgrade(sqlite_url)
        downgrade(sqlite_url, "0008")
    out = _billing(sqlite_url, "invoice", "list")
    assert out.returncode == 2, out.stdout
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "billing db upgrade" in out.stderr
    if state == "behind":
        assert "0008" in out.stderr and head_revision() in out.stderr
    upgrade(sqlite_url)
    assert _billing(sqlite_url, "invoice", "list").returncode == 0
