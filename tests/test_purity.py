"""The pure packages (catalog, costs, rating, quota) import no persistence, web or payment
library and never read the clock: checked on every module's AST, so adding such an import
or call anywhere in them fails this test."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE_PACKAGES = ("billing.catalog", "billing.costs", "billing.rating", "billing.quota")
IMPURE_BILLING_PACKAGES = ("billing.store", "billing.ledger", "billing.reservations", "billing.alerts", "billing.api")
FORBIDDEN_MODULES = ("sqlmodel", "sqlalchemy", "fastapi", "starlette", "stripe", "httpx", *IMPURE_BILLING_PACKAGES)
# (module, attribute) pairs that read the clock, however they are reached
CLOCK_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
               ("time", "time"), ("time", "time_ns")}


def pure_modules() -> list[tuple[str, Path]]:
    out = []
    for package in PURE_PACKAGES:
        folder = ROOT.joinpath(*package.split("."))
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out.append((name, path))
    return out


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def violations(source: str, module: str = "billing.rating.x", is_package: bool = False) -> list[str]:
    """Every forbidden import and clock read in one module's source."""
    tree = ast.parse(source)
    found: list[str] = []
    imported: list[str] = []
    aliases: dict[str, str] = {}  # local name -> what it is (dt -> datetime.datetime, clock -> time.time)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
            aliases.update({alias.asname: alias.name for alias in node.names if alias.asname})
        elif isinstance(node, ast.ImportFrom):
            source_module = _absolute(module, node, is_package)
            imported.append(source_module)
            imported += [f"{source_module}.{alias.name}" for alias in node.names]
            aliases.update({alias.asname or alias.name: f"{source_module}.{alias.name}" for alias in node.names})
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name is None:
                # e.g. datetime(2026, 1, 1).now() or (a or b).now(): judge by the attribute alone
                if isinstance(node.func, ast.Attribute) and node.func.attr in ("now", "utcnow"):
                    found.append(f"line {node.lineno}: clock read .{node.func.attr}()")
                continue
            head, _, rest = name.partition(".")
            parts = (aliases.get(head, head) + ("." + rest if rest else "")).split(".")
            if len(parts) >= 2 and (parts[-2], parts[-1]) in CLOCK_CALLS:
                found.append(f"line {node.lineno}: clock read {name}()")
            elif (_dotted(node.func) or "").rsplit(".", 1)[-1] in ("import_module", "__import__"):
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        imported.append(arg.value)  # importlib.import_module("sqlmodel")
    for name in imported:
        for bad in FORBIDDEN_MODULES:
            if name == bad or name.startswith(bad + "."):
                found.append(f"imports {name}")
                break
    return found


# ------------------------------------------------------------------------- the check

def test_there_are_pure_modules_to_check():
    names = {name for name, _ in pure_modules()}
    for expected in ("billing.catalog.schema", "billing.catalog.loader", "billing.costs.book",
                     "billing.rating.engine", "billing.rating.meters", "billing.rating.periods",
                     "billing.rating.charges.graduated"):
        assert expected in names


@pytest.mark.parametrize("module, path", pure_modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_pure_module_has_no_forbidden_imports_or_clock_reads(module, path):
    source = path.read_text(encoding="utf-8")
    assert violations(source, module, path.name == "__init__.py") == []


def test_importing_the_pure_packages_loads_no_forbidden_module():
    """The transitive check: a pure module importing an impure billing module fails here."""
    code = ("import sys\n"
            + "".join(f"import {p}\n" for p in PURE_PACKAGES)
            + f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {('sqlmodel', 'sqlalchemy', 'fastapi', 'starlette', 'stripe', 'httpx')!r} "
            + f"or m.startswith({IMPURE_BILLING_PACKAGES!r}))\n"
            + "print(','.join(bad))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


# ------------------------------------------------------------ the checker catches things

@pytest.mark.parametrize("source", [
    "import sqlmodel",
    "import sqlalchemy.orm as orm",
    "from fastapi import FastAPI",
    "from starlette.requests import Request",
    "import stripe",
    "import httpx",
    "from billing.store import repository",
    "from billing.store.db import engine_for",
    "from billing.ledger.ingest import Ledger",
    "from billing.reservations.holds import Quota",
    "import billing.alerts.outbox",
    "import billing.api.routes",
    "from billing import ledger",
    "from ..ledger import db",           # relative, from billing.rating.x -> billing.ledger
    "from .. import api",                # billing.api
    "import importlib\nimportlib.import_module('stripe')",
    "from datetime import datetime\nx = datetime.now()",
    "import datetime\nx = datetime.datetime.utcnow()",
    "from datetime import datetime as dt\nx = dt.now(tz)",
    "from datetime import date\nx = date.today()",
    "import time\nx = time.time()",
    "from time import time\nx = time()",
    "from time import time as clock\nx = clock()",
])
def test_the_checker_flags(source):
    assert violations(source, "billing.rating.x") != []


@pytest.mark.parametrize("source", [
    "from datetime import datetime\nx = datetime(2026, 1, 1)",
    "from datetime import timedelta\nx = timedelta(days=1)",
    "from billing.money import round_line",
    "from billing.rating.types import MeterTotals",
    "def f(now):\n    return now",
    "x = 'sqlmodel is not imported here'",
    "from . import engine",
])
def test_the_checker_allows(source):
    assert violations(source, "billing.rating.x") == []
