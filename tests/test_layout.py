"""The tests' layout: each ``tests/<package>/`` folder mirrors a ``billing/<package>/`` (or is
a named cross-cutting folder), and no test module imports another test module (shared
helpers live in ``tests/support/``, fixtures in ``conftest.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# folders that mirror no package: helpers, and properties that hold across packages
CROSS_CUTTING = frozenset({"support", "properties"})


def unmatched_folders(root: Path) -> list[str]:
    """``tests/<name>/`` folders (with Python files) that have no ``billing/<name>/``."""
    return sorted(d.name for d in (root / "tests").iterdir()
                  if d.is_dir() and d.name not in CROSS_CUTTING and any(d.glob("*.py"))
                  and not (root / "billing" / d.name).is_dir())


def _imported_modules(tree: ast.AST) -> list[str]:
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
    return out


def imports_of_test_modules(root: Path) -> list[str]:
    """``file: module`` for each import of a test module (``tests.<pkg>.test_x``, ``tests.test_x``
    or a bare ``test_x``) by a file under ``tests/``."""
    found = []
    for path in sorted((root / "tests").rglob("*.py")):
        for module in _imported_modules(ast.parse(path.read_text(), str(path))):
            if module.split(".")[-1].startswith("test_") and module.split(".")[0] in ("tests", module):
                found.append(f"{path.relative_to(root)}: {module}")
    return found


def test_every_test_folder_mirrors_a_package():
    assert unmatched_folders(ROOT) == []


def test_no_test_module_imports_another():
    assert imports_of_test_modules(ROOT) == []


def test_the_checks_find_what_they_look_for(tmp_path: Path):
    (tmp_path / "billing" / "rating").mkdir(parents=True)
    for folder in ("rating", "support", "stray"):
        (tmp_path / "tests" / folder).mkdir(parents=True)
        (tmp_path / "tests" / folder / "__init__.py").write_text("")
    (tmp_path / "tests" / "rating" / "test_a.py").write_text(
        "from tests.rating.test_b import helper\nfrom tests.support.db import World\nimport test_c\n")
    (tmp_path / "tests" / "stray" / "test_d.py").write_text("from tests.test_money import x\n")
    assert unmatched_folders(tmp_path) == ["stray"]
    assert imports_of_test_modules(tmp_path) == ["tests/rating/test_a.py: tests.rating.test_b",
                                             "tests/rating/test_a.py: test_c",
                                             "tests/stray/test_d.py: tests.test_money"]


def test_the_license_file_is_the_license_pyproject_names():
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    text = (ROOT / "LICENSE").read_text()
    assert declared == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
