"""The Dockerfile and compose.yaml, held to the project (no container daemon or registry is
reachable here, so nothing is built): every `billing` command and option they run exists in
the CLI, every BILLING_* variable they set is one the code reads, the files they copy exist,
and the image installs the project the way CI does."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer
import yaml

from billing.cli import app
from billing.config import Settings

ROOT = Path(__file__).resolve().parents[1]
CLI = typer.main.get_command(app)


def _problem(argv: list[str]) -> str | None:
    """Why ``argv`` (``billing ...``) is not a command line of the CLI, or None (parsed by
    the CLI's own parser: typer's, which vendors click)."""
    assert argv[0] == "billing", argv
    command = CLI
    args = argv[1:]
    while hasattr(command, "commands") and args and not args[0].startswith("-"):
        sub = command.commands.get(args[0])
        if sub is None:
            return f"{' '.join(argv)}: no command {args[0]!r}"
        command, args = sub, args[1:]
    if hasattr(command, "commands"):
        return f"{' '.join(argv)}: names a group, not a command"
    try:
        command.make_context("billing", list(args))
    except Exception as exc:  # the parser's usage errors (typer's vendored click exceptions)
        if type(exc).__name__ == "Exit":
            return None
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return f"{' '.join(argv)}: {message}"
    return None


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _dockerfile_cmd() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.M)
    return yaml.safe_load(cmd)


def test_every_command_they_run_exists_with_its_options():
    commands = [_dockerfile_cmd()] + [s["command"] for s in _compose()["services"].values()
                                      if s.get("command") and s["command"][0] == "billing"]
    assert len(commands) >= 4  # serve (image), db upgrade, serve, worker
    assert {" ".join(c[:2]) for c in commands} >= {"billing serve", "billing db", "billing worker"}
    assert [p for p in map(_problem, commands) if p] == []


def test_the_check_finds_a_command_or_option_that_does_not_exist():
    assert _problem(["billing", "serve", "--no-such-option"])
    assert _problem(["billing", "no-such-command"])
    assert _problem(["billing", "db"])
    assert _problem(["billing", "serve", "--port", "8000"]) is None


def test_every_variable_they_set_is_read_by_the_code():
    settings = {f"BILLING_{name.upper()}" for name in Settings.model_fields}
    source = "\n".join(p.read_text() for p in (ROOT / "billing").rglob("*.py"))
    names = set(re.findall(r"\bBILLING_[A-Z_]+\b", (ROOT / "Dockerfile").read_text()))
    for service in _compose()["services"].values():
        names |= {n for n in (service.get("environment") or {}) if n.startswith("BILLING_")}
    assert names >= {"BILLING_DATABASE_URL", "BILLING_PLANS_DIR"}
    unknown = sorted(n for n in names if n not in settings and f'"{n}"' not in source)
    assert unknown == []


def test_the_image_copies_what_exists_and_installs_like_ci():
    docker = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", docker, re.M):
        for path in shlex.split(source):
            assert (ROOT / path).exists(), path
    (install,) = re.findall(r"^RUN pip install (-e \S+)", docker, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert install == "-e ." and re.search(r'pip install -e "?\.\[test\]"?', ci)
    assert re.search(r"EXPOSE 8000", docker) and "--port\", \"8000\"" in docker
