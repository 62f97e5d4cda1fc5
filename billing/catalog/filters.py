"""Meter filters (pure): what a plan's ``filter`` may say and the one matching rule every
reader uses -- ``Meter.matches`` (previews, quota requests, the running counters) and the
SQL condition of the ledger's reads (``store.aggregate_sql._meter_condition``).

An entry is a property and a value, a list of values (``in``), or a mapping of operators,
all of which must hold: ``in`` (present and one of a non-empty list), ``not`` (absent, or
none of a value or non-empty list), ``exists`` (true: present; false: absent). Values
compare as text (``5`` matches ``"5"``; ``True`` as ``"True"``); a JSON null is absent.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Union

from pydantic import BeforeValidator

FilterScalar = Union[str, int, bool]
FILTER_OPERATORS = ("in", "not", "exists")


def _filter_scalar(value: object, where: str) -> FilterScalar:
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return int(value)  # YAML reads 5.0 as a decimal: the integer 5
    if isinstance(value, (str, int, bool)):
        return value
    raise ValueError(f"{where}must be a string, an integer or a boolean, got {value!r}")


def _filter_list(value: object, where: str) -> list[FilterScalar]:
    if not isinstance(value, list):
        return [_filter_scalar(value, where)]
    if not value:
        raise ValueError(f"{where}an empty list matches nothing: list at least one value")
    return [_filter_scalar(v, where) for v in value]


def _filter_value(value: object) -> object:
    """A filter entry: a value or a list of values (the property is one of them), or a
    mapping of operators, all of which must hold: ``in`` (one of a non-empty list),
    ``not`` (absent, or none of a value or non-empty list), ``exists`` (true: present,
    false: absent). Bad input is a named error (unknown operator, empty list...)."""
    if isinstance(value, dict):
        if not value:
            raise ValueError("an operator mapping needs at least one of in, not, exists")
        out: dict[str, object] = {}
        for op, operand in value.items():
            if op not in FILTER_OPERATORS:
                raise ValueError(f"unknown filter operator {op!r} (use in, not or exists)")
            if op == "exists":
                if not isinstance(operand, bool):
                    raise ValueError(f"exists must be true or false, got {operand!r}")
                out[op] = operand
            elif op == "in":
                if not isinstance(operand, list):
                    raise ValueError(f"in takes a list of values, got {operand!r}")
                out[op] = _filter_list(operand, "in: ")
            else:
                out[op] = _filter_list(operand, "not: ") if isinstance(operand, list) else \
                    _filter_scalar(operand, "not: ")
        return out
    if isinstance(value, list):
        return _filter_list(value, "")
    try:
        return _filter_scalar(value, "")
    except ValueError:
        raise ValueError(f"a filter value is a string, an integer, a boolean, a list of them or a mapping of "
                         f"operators (in, not, exists), got {value!r}") from None


FilterValue = Annotated[object, BeforeValidator(_filter_value)]


def _texts(values: object) -> frozenset[str]:
    return frozenset(str(v) for v in (values if isinstance(values, list) else [values]))


# one compiled filter rule: (property, operator, operand); operators: "in" (the value, as
# text, is one of the operand), "not" (absent or none of it), "exists" (present iff operand)
FilterRule = tuple[str, str, Union[frozenset, bool]]


def filter_rules(filters: dict[str, object]) -> tuple[FilterRule, ...]:
    """The filter as rules, in the plan's order (a plain value or list is ``in``)."""
    rules: list[FilterRule] = []
    for prop, entry in filters.items():
        if isinstance(entry, dict):
            for op, operand in entry.items():
                rules.append((prop, op, operand if op == "exists" else _texts(operand)))
        else:
            rules.append((prop, "in", _texts(entry)))
    return tuple(rules)


def rule_holds(rule: FilterRule, properties: dict) -> bool:
    """One rule on an event's properties (values compare as text: 5 matches "5"; a JSON
    null is absent)."""
    prop, op, operand = rule
    value = properties.get(prop)
    if op == "exists":
        return (value is not None) is operand
    if value is None:
        return op == "not"
    text = value if type(value) is str else str(value)
    return (text in operand) is (op == "in")  # type: ignore[operator]
