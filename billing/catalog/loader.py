"""Load plan files, reporting EVERY problem with its file, path and line.

Structural problems come from pydantic (each with its ``loc``); cross-references (a
charge naming an unknown meter, duplicate keys, overage without a price...) are checked
on the raw document too, so one run lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from billing.catalog.checks import duplicate_keys, semantic_problems
from billing.catalog.schema import Plan
from billing.errors import BillingError, ErrorCode


@dataclass(frozen=True)
class PlanProblem:
    file: str
    path: str  # e.g. "charges[2].tiers[1].up_to"
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '<plan>'}: {self.message}"


class PlanInvalid(BillingError):
    code = ErrorCode.PLAN_INVALID

    def __init__(self, problems: list[PlanProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems),
                         details=[p.__dict__ for p in problems])


class _DecimalLoader(yaml.SafeLoader):
    """YAML floats become Decimal (via their text), never binary floats."""


_SPECIAL_FLOATS = {".inf": "Infinity", "+.inf": "Infinity", "-.inf": "-Infinity", ".nan": "NaN"}


def _decimal_constructor(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    text = loader.construct_scalar(node).replace("_", "")
    try:
        # .inf/.nan become non-finite Decimals, which the schema then rejects with a path
        return Decimal(_SPECIAL_FLOATS.get(text.lower(), text))
    except ArithmeticError:  # e.g. YAML 1.1 sexagesimal floats (1:30.5)
        raise yaml.constructor.ConstructorError(
            None, None, f"cannot read {text!r} as a decimal number", node.start_mark) from None


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _decimal_constructor)


# ------------------------------------------------------------------- path helpers

def _format_path(parts: list[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _real_path(data: Any, loc: tuple) -> list[Any]:
    """Drop pydantic's synthetic loc parts (union tags, validator names) by walking the data."""
    parts: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            parts.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            parts.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and not parts[-1:] == [part]:
            # a missing required field: name it; skip union tags that are values, not keys
            if _is_tag(node, part):
                continue
            parts.append(part)
            node = None
        # else: synthetic part on a scalar/None node; skip
    return parts


_DISCRIMINATORS = ("model", "policy", "type")  # the tag fields of the schema's unions
_MEMBER_NAMES = frozenset({"str", "int", "bool", "float", "decimal", "none"})  # smart-union members


def _is_tag(node: dict, part: str) -> bool:
    """A union tag is the node's discriminator value (``per_unit`` for ``model: per_unit``),
    not any value: a flat fee named "amount" that lacks ``amount`` must report ``amount``.
    A smart union (a filter value: str | int | bool | list) names its members in ``loc``."""
    return any(node.get(k) == part for k in _DISCRIMINATORS) or part in _MEMBER_NAMES or part.startswith(
        ("function-", "tagged-union", "union[", "list[", "dict[", "json-or-python"))


def _tag_values() -> dict[str, tuple[str, ...]]:
    """discriminator key -> its allowed values, read from the schema's tagged unions."""
    from typing import get_args

    from billing.catalog.schema import Exhaustion, Fee, Price

    out: dict[str, tuple[str, ...]] = {}
    for union, tag in ((Price, "model"), (Exhaustion, "policy"), (Fee, "type")):
        members = get_args(get_args(union)[0])
        out[tag] = tuple(get_args(m.model_fields[tag].annotation)[0] for m in members)
    return out


_TAG_VALUES = _tag_values()


def _node_at(data: Any, parts: list[Any]) -> Any:
    node = data
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return None
    return node


def _is_union_member(part: str) -> bool:
    return part in _MEMBER_NAMES or part.startswith(("union[", "list["))


def _line_of(root: yaml.Node | None, parts: list[Any]) -> int | None:
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == part), None)
            if nxt is None:
                return node.start_mark.line + 1
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


# --------------------------------------------------------------------- loading

def parse_plan_text(text: str, filename: str = "<plan>") -> Plan:
    """Parse one plan document; raise PlanInvalid listing every problem."""
    try:
        root = yaml.compose(text, Loader=_DecimalLoader)
        data = yaml.load(text, Loader=_DecimalLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PlanInvalid([PlanProblem(filename, "", f"not valid YAML: {getattr(exc, 'problem', exc)}",
                                       mark.line + 1 if mark else None)]) from None
    if not isinstance(data, dict):
        raise PlanInvalid([PlanProblem(filename, "", "a plan file must be a YAML mapping")])

    problems: list[PlanProblem] = []
    plan: Plan | None = None
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        union_misses: dict[str, tuple[list[Any], list[str]]] = {}
        for err in exc.errors():
            parts = _real_path(data, err["loc"])
            if err["type"] == "value_error" and parts[-1:] == ["tiers"]:
                continue  # tier ordering: reported per tier by checks.semantic_problems
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; see plans/README.md)"
            if err["type"] in ("union_tag_not_found", "union_tag_invalid"):
                # point at the tag key itself and list what it may be
                tag = str((err.get("ctx") or {}).get("discriminator", "")).strip("'")
                if tag and isinstance(_node_at(data, parts), dict):
                    parts = [*parts, tag]
                    given = _node_at(data, parts)
                    options = ", ".join(_TAG_VALUES.get(tag, ()))
                    msg = (f"required: one of {options}" if given is None
                           else f"{given!r} is not one of {options}")
            if any(isinstance(x, str) and _is_union_member(x) for x in err["loc"]):
                # a smart union (str | int | bool | list) fails once per member: one problem
                union_misses.setdefault(_format_path(parts), (parts, []))[1].append(msg.removeprefix("Input should be "))
                continue
            problems.append(PlanProblem(filename, _format_path(parts), msg, _line_of(root, parts)))
        for path, (parts, wanted) in union_misses.items():
            options = list(dict.fromkeys(wanted))
            msg = "Input should be " + (", ".join(options[:-1]) + " or " + options[-1] if len(options) > 1 else options[0])
            problems.append(PlanProblem(filename, path, msg, _line_of(root, parts)))
    for parts, msg in semantic_problems(data):
        problems.append(PlanProblem(filename, _format_path(parts), msg, _line_of(root, parts)))
    for parts, msg, line in duplicate_keys(root):
        problems.append(PlanProblem(filename, _format_path(parts), msg, line))
    if problems:
        # one problem per (path, message), in file order
        unique = list(dict.fromkeys(problems))
        unique.sort(key=lambda p: (p.line or 0, p.path))
        raise PlanInvalid(unique)
    assert plan is not None
    return plan


def load_plan_file(path: str | Path) -> Plan:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanInvalid([PlanProblem(str(path), "", f"cannot read file: {exc.strerror}")]) from None
    return parse_plan_text(text, str(path))


def plan_files(paths: list[str | Path]) -> list[Path]:
    """Expand directories into their *.yaml / *.yml files (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml")))
        else:
            out.append(p)
    return out


def _top_level_line(path: Path, key: str) -> int | None:
    try:
        return _line_of(yaml.compose(path.read_text(encoding="utf-8"), Loader=_DecimalLoader), [key])
    except (OSError, yaml.YAMLError):
        return None


def validate_paths(paths: list[str | Path]) -> tuple[list[Plan], list[PlanProblem]]:
    """Validate every file; return the plans that loaded and every problem found.

    Across files: a plan id + version is defined once, and a plan's versions take effect
    in version order at distinct instants (so the version in force at any instant is
    unambiguous and a later version never silently hides behind an earlier one)."""
    plans: list[Plan] = []
    problems: list[PlanProblem] = []
    files = plan_files(paths)
    if not files:
        problems.append(PlanProblem(", ".join(map(str, paths)), "", "no plan files found"))
    seen: dict[tuple[str, int], Path] = {}
    for f in files:
        try:
            plan = load_plan_file(f)
        except PlanInvalid as exc:
            problems.extend(exc.problems)
            continue
        key = (plan.plan, plan.version)
        if key in seen:
            problems.append(PlanProblem(str(f), "version",
                                        f"plan {plan.plan!r} version {plan.version} is also defined in {seen[key]}",
                                        _top_level_line(f, "version")))
            continue
        seen[key] = f
        plans.append(plan)
    by_id: dict[str, list[Plan]] = {}
    for plan in plans:
        by_id.setdefault(plan.plan, []).append(plan)
    misordered: set[tuple[str, int]] = set()
    for versions in by_id.values():
        versions.sort(key=lambda p: p.version)
        for before, after in zip(versions, versions[1:]):
            if after.effective_from > before.effective_from:
                continue
            misordered.add((after.plan, after.version))
            f = seen[(after.plan, after.version)]
            how = "at the same instant as" if after.effective_from == before.effective_from else "before"
            problems.append(PlanProblem(
                str(f), "effective_from",
                f"version {after.version} takes effect {how} version {before.version} "
                f"({before.effective_from.isoformat()}, {seen[(before.plan, before.version)]}): "
                "a plan's versions must take effect in version order", _top_level_line(f, "effective_from")))
    return [p for p in plans if (p.plan, p.version) not in misordered], problems
