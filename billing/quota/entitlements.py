"""Entitlements (pure): what a plan's ``features`` grant a customer.

A feature is boolean (``sso: true``), static (``max_projects: 10``, ``support: priority``)
or metered (``{metered: <meter or charge>}``: the quota decision on that key answers it,
so the answer and a quota check never disagree). A feature the plan does not list is not
granted (``kind: absent``).

``features_in_force(features, overrides)`` layers per-customer overrides on the plan's
features (an override wins; an override of ``None`` withdraws the feature);
``lookup(features, feature, overrides)`` answers one feature from them. The caller loads
the features (the quota's cached customer context) and, for a metered feature, asks the
quota decision (``answer_metered``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from billing.catalog.features import MeteredFeature

Kind = Literal["boolean", "static", "metered", "absent"]


@dataclass(frozen=True)
class Entitlement:
    feature: str
    kind: Kind
    has: bool  # the customer has the feature (metered: once the quota decision answered)
    value: bool | int | str | None  # boolean / static: the value; metered / absent: None
    metered: str | None = None  # metered: the meter or charge key the quota decision is asked on

    def to_json(self) -> dict[str, Any]:
        return {"feature": self.feature, "kind": self.kind, "has": self.has, "value": self.value,
                "metered": self.metered}


def features_in_force(features: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The plan's ``features`` with ``overrides`` layered on (an override wins; ``None``
    withdraws the feature)."""
    merged = dict(features)
    for name, value in (overrides or {}).items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def lookup(features: Mapping[str, Any], feature: str, overrides: Mapping[str, Any] | None = None) -> Entitlement:
    """Whether the features (with ``overrides``) grant ``feature``, and its value. A
    boolean grants when true; a number when above 0; text always; a metered feature is
    answered by the quota decision (``has`` False here until ``answer_metered``)."""
    value = features_in_force(features, overrides).get(feature)
    if value is None:
        return Entitlement(feature, "absent", False, None)
    if isinstance(value, MeteredFeature):
        return Entitlement(feature, "metered", False, None, value.metered)
    if isinstance(value, bool):
        return Entitlement(feature, "boolean", value, value)
    if isinstance(value, int):
        return Entitlement(feature, "static", value > 0, value)
    return Entitlement(feature, "static", True, value)


def answer_metered(entitlement: Entitlement, granted: bool) -> Entitlement:
    """A metered entitlement answered by its quota decision (``granted``: not a deny)."""
    return Entitlement(entitlement.feature, "metered", granted, None, entitlement.metered)
