"""The plan language's building blocks, shared by its modules (``schema``, ``features``):
keys, amounts, and the frozen strict model every part of a plan is."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Key = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.\-]*$", max_length=80)]
Money = Annotated[Decimal, Field(ge=0)]
Positive = Annotated[Decimal, Field(gt=0)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RateLimit(Frozen):
    """At most ``limit`` grants per fixed ``window_seconds`` window (exhaustion policies, cost guards)."""

    limit: Annotated[int, Field(gt=0)]
    window_seconds: Annotated[int, Field(gt=0)]
