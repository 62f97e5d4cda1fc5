"""A plan's features (entitlements): what a subscriber has. A feature is boolean (``sso:
true``), static (a whole number >= 0 or text: ``max_projects: 10``) or metered
(``{metered: <meter or charge>}``: the quota decision on it answers). Any other value is a
named problem. ``billing.quota.entitlements`` answers a feature from them."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Union

from pydantic import PlainValidator

from billing.catalog.base import Frozen, Key


class MeteredFeature(Frozen):
    """A feature granted by usage: the quota decision on ``metered`` (a meter or charge key
    of the plan) answers whether the customer has it now."""

    metered: Key


FeatureValueType = Union[bool, int, str, MeteredFeature]


def feature_value(value: Any) -> FeatureValueType:
    """A feature's value as the plan writes it, or a ValueError saying what it may be."""
    if isinstance(value, (bool, MeteredFeature)) or (isinstance(value, int) and value >= 0):
        return value
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):
        return MeteredFeature.model_validate(value)
    shown = value if isinstance(value, (Decimal, int)) else repr(value)
    raise ValueError(f"a feature is true/false, a whole number >= 0, text or {{metered: <meter or charge>}}; "
                     f"got {shown}")


FeatureValue = Annotated[Any, PlainValidator(feature_value)]
