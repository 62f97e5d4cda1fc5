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
from pydantic import BaseModel, ValidationError

from billing.catalog.checks import duplicate_keys, semantic_problems
from billing.catalog.schema import Plan
from billing.errors import BillingError, ErrorCode
from billing.money import CURRENCIES


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


# Bounds that keep loading a plan fast and its numbers usable, whatever the file holds.
MAX_PLAN_BYTES = 64 * 1024  # the shipped plans are at most 9 KiB; a larger file is refused unread
MAX_DEPTH = 32  # nesting of mappings and sequences (plans use about 6)
MAX_NODES = 20_000  # scalars, mappings and sequences once every alias is expanded
MAX_NUMBER = Decimal(10) ** 15  # the magnitude of any number in a plan
MAX_DECIMALS = 12  # decimal places of any number in a plan


class _DecimalLoader(yaml.SafeLoader):
    """YAML floats become Decimal (via their text), never binary floats. Composing stops at
    ``MAX_DEPTH`` levels of nesting (PyYAML composes recursively: 10,000 levels were a
    RecursionError)."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_SPECIAL_FLOATS = {".inf": "Infinity", "+.inf": "Infinity", "-.inf": "-Infinity", ".nan": "NaN"}


def _decimal_constructor(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    text = loader.construct_scalar(node).replace("_", "")
    try:
        # .inf/.nan become non-finite Decimals, which the schema then rejects with a path
        return Decimal(_SPECIAL_FLOATS.get(text.lower(), text))
    except ArithmeticError:  # e.g. YAML 1.1 sexagesimal floats (1:30.5)
        raise yaml.constructor.ConstructorError(
            None, None, f"cannot read {text!r} as a decimal number", node.start_mark) from None


def _int_constructor(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    try:
        return yaml.SafeLoader.construct_yaml_int(loader, node)
    except ValueError:  # e.g. more digits than Python converts (4,300)
        raise yaml.constructor.ConstructorError(
            None, None, f"cannot read {node.value[:20]!r}... as a number", node.start_mark) from None


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _decimal_constructor)
_DecimalLoader.add_constructor("tag:yaml.org,2002:int", _int_constructor)


def _expanded_size(root: yaml.Node) -> tuple[int, dict[int, int]] | str:
    """How many nodes the document holds once every alias is expanded (shared nodes are
    counted once per use, in time linear in the distinct nodes; capped just past
    ``MAX_NODES``) and each node's own count, or the reason it cannot be expanded."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise _Recursive()
        open_nodes.add(key)
        total = 1
        for child in _children(node):
            total += size(child)
        open_nodes.discard(key)
        sizes[key] = total = min(total, MAX_NODES + 1)
        return total

    try:
        return size(root), sizes
    except _Recursive:
        return "an alias refers to a node that contains it"


class _Recursive(Exception):
    pass


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _bomb(root: yaml.Node, sizes: dict[int, int]) -> tuple[list[Any], int]:
    """(path, line) of the smallest node that is over ``MAX_NODES`` on its own."""
    node, path = root, []
    while True:
        if isinstance(node, yaml.MappingNode):
            step = next(((k.value, v) for k, v in node.value if sizes[id(v)] > MAX_NODES), None)
        elif isinstance(node, yaml.SequenceNode):
            step = next(((i, v) for i, v in enumerate(node.value) if sizes[id(v)] > MAX_NODES), None)
        else:
            step = None
        if step is None:
            return path, node.start_mark.line + 1
        path.append(step[0])
        node = step[1]


def _load_yaml(text: str, filename: str) -> tuple[yaml.Node | None, Any]:
    """(the node tree, the data) of one YAML document, bounded in size, depth and alias
    expansion; PlanInvalid (with the line) otherwise."""
    if len(text) > MAX_PLAN_BYTES:
        raise PlanInvalid([PlanProblem(filename, "", f"a plan file is at most {MAX_PLAN_BYTES:,} bytes")])
    loader = _DecimalLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            expanded = _expanded_size(root)
            if isinstance(expanded, str):
                raise PlanInvalid([PlanProblem(filename, "", expanded, root.start_mark.line + 1)])
            if expanded[0] > MAX_NODES:
                path, line = _bomb(root, expanded[1])
                raise PlanInvalid([PlanProblem(filename, _format_path(path), f"more than {MAX_NODES:,} values once "
                                               "its aliases are expanded (an alias bomb?)", line)])
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PlanInvalid([PlanProblem(filename, "", f"not valid YAML: {getattr(exc, 'problem', exc)}",
                                       mark.line + 1 if mark else None)]) from None
    finally:
        loader.dispose()
    return root, data


def _number_problems(plan: Plan) -> list[tuple[list[Any], str]]:
    """Numbers of a validated plan outside ``MAX_NUMBER`` / ``MAX_DECIMALS`` ("1e999999"
    passed validation and crashed the preview)."""
    out: list[tuple[list[Any], str]] = []

    def walk(value: Any, path: list[Any]) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), [*path, name])
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, [*path, i])
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, [*path, key])
        elif isinstance(value, (int, Decimal)) and not isinstance(value, bool):
            problem = number_problem(value)
            if problem:
                out.append((path, problem))

    walk(plan, [])
    return out


def number_problem(value: int | Decimal) -> str | None:
    """Why a number cannot be in a plan, or None."""
    if isinstance(value, Decimal) and not value.is_finite():
        return "must be a finite number"
    if abs(value) > MAX_NUMBER:
        return f"must be at most {MAX_NUMBER:,} in magnitude"
    if isinstance(value, Decimal) and value.as_tuple().exponent < -MAX_DECIMALS and value != value.quantize(
            Decimal(1).scaleb(-MAX_DECIMALS)):
        return f"has more than {MAX_DECIMALS} decimal places"
    return None


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
    root, data = _load_yaml(text, filename)
    if not isinstance(data, dict):
        raise PlanInvalid([PlanProblem(filename, "", "a plan file must be a YAML mapping")])
    return plan_from_data(data, filename, root)


def plan_from_data(data: dict, filename: str = "<plan>", root: yaml.Node | None = None) -> Plan:
    """Validate a plan document already parsed (``root``: its YAML nodes, for line numbers;
    None for a document built in code, e.g. a plan with a contract's overrides): the
    schema, the numbers' bounds, the currency and the cross-reference checks. Raises
    PlanInvalid listing every problem."""
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
                    expected = (err.get("ctx") or {}).get("expected_tags")  # this union's own tags
                    options = ", ".join(t.strip().strip("'") for t in expected.split(",")) if expected else \
                        ", ".join(_TAG_VALUES.get(tag, ()))
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
    if plan is not None:
        for parts, msg in _number_problems(plan):
            problems.append(PlanProblem(filename, _format_path(parts), msg, _line_of(root, parts)))
        if plan.currency not in CURRENCIES:  # customers are checked against the same list
            problems.append(PlanProblem(filename, "currency", f"{plan.currency!r} is not an ISO 4217 currency code",
                                        _line_of(root, ["currency"])))
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
    return parse_plan_text(read_plan_text(path), str(path))


def read_plan_text(path: Path) -> str:
    """The file's text: at most ``MAX_PLAN_BYTES``, UTF-8 (a bad byte is reported with its
    line and column); PlanInvalid otherwise."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise PlanInvalid([PlanProblem(str(path), "", f"cannot read file: {exc.strerror}")]) from None
    if len(raw) > MAX_PLAN_BYTES:
        raise PlanInvalid([PlanProblem(str(path), "", f"a plan file is at most {MAX_PLAN_BYTES:,} bytes")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise PlanInvalid([PlanProblem(str(path), "", f"not UTF-8: byte 0x{raw[exc.start]:02x} at column "
                                                      f"{column}", line)]) from None


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
        return _line_of(_load_yaml(read_plan_text(path), str(path))[0], [key])
    except PlanInvalid:
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
