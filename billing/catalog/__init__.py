"""Plan language (schema), loader/validator and the versioned catalog. Pure."""

from billing.catalog.catalog import Catalog, PlanNotFound
from billing.catalog.loader import PlanInvalid, PlanProblem, load_plan_file, parse_plan_text, validate_paths
from billing.catalog.schema import Meter, Plan, UsageCharge

__all__ = ["Catalog", "Meter", "Plan", "PlanInvalid", "PlanNotFound", "PlanProblem", "UsageCharge",
           "load_plan_file", "parse_plan_text", "validate_paths"]
