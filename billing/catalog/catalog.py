"""The catalog: every version of every plan, resolved by effective date."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from billing.catalog.loader import PlanInvalid, validate_paths
from billing.catalog.schema import Plan
from billing.errors import BillingError, ErrorCode


class PlanNotFound(BillingError):
    code = ErrorCode.PLAN_NOT_FOUND


class Catalog:
    """Every version of every plan, each compiled once (``Plan.compiled``) when loaded."""

    def __init__(self, plans: list[Plan]):
        self._versions: dict[str, list[Plan]] = {}
        for plan in plans:
            plan.compiled  # noqa: B018 -- compile now, once, not on a first hot-path request
            self._versions.setdefault(plan.plan, []).append(plan)
        for versions in self._versions.values():
            versions.sort(key=lambda p: (p.effective_from, p.version))

    @classmethod
    def from_paths(cls, *paths: str | Path) -> "Catalog":
        plans, problems = validate_paths(list(paths))
        if problems:
            raise PlanInvalid(problems)
        return cls(plans)

    def plan_ids(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, plan_id: str) -> list[Plan]:
        if plan_id not in self._versions:
            raise PlanNotFound(f"unknown plan {plan_id!r}; known: {', '.join(self.plan_ids()) or 'none'}")
        return list(self._versions[plan_id])

    def get(self, plan_id: str, version: int) -> Plan:
        for plan in self.versions(plan_id):
            if plan.version == version:
                return plan
        raise PlanNotFound(f"plan {plan_id!r} has no version {version}")

    def resolve(self, plan_id: str, at: datetime) -> Plan:
        """The version in force at ``at``: the latest whose effective_from <= at."""
        candidates = [p for p in self.versions(plan_id) if p.effective_from <= at]
        if not candidates:
            raise PlanNotFound(f"plan {plan_id!r} has no version in force at {at.isoformat()}")
        return candidates[-1]

    def all(self) -> list[Plan]:
        return [p for versions in self._versions.values() for p in versions]
