"""Settings from the environment (``BILLING_*``), via pydantic-settings."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore")

    database_url: str = "sqlite:///billing.db"
    plans_dir: str = "plans"
    # events may be at most this far ahead of the ingesting server's clock
    future_tolerance_seconds: int = 300
    # cost data files layered over the shipped cost book: a directory of *.yaml files, or
    # files separated by os.pathsep or commas (billing.store.cost_prices)
    costs: str | None = None
    # the API refuses request bodies over this many bytes (413), on every route, before
    # parsing or authentication
    max_request_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    # how long an API server trusts a key it looked up; a key revoked elsewhere (the CLI,
    # another server) stops working within this time, at once on the server that revoked it
    key_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    stripe_api_key: SecretStr | None = None
    stripe_api_base: str | None = None
    stripe_webhook_secret: SecretStr | None = None
    # Idempotency-Key records (billing.api.idempotency): kept this long; a dead server's claim lapses after the lease
    idempotency_retention_hours: float = Field(default=24.0, ge=24.0)
    idempotency_lease_seconds: float = Field(default=30.0, gt=0.0, le=3600.0)
    # `billing worker`: its close job closes the periods that ended at least this long ago
    # (late events within the grace land in the period's invoice, not in an adjustment)
    close_grace_seconds: int = Field(default=3600, ge=0, le=31 * 86_400)
    # standard event formats (billing.api.formats): the CloudEvents attribute naming the
    # customer, and the source whose ids are kept as is (others: "<source>#<id>"); the OTLP
    # span-or-resource attributes naming the customer, feature and task of a GenAI span
    cloudevents_customer_attribute: str = Field(default="subject", min_length=1)
    cloudevents_source: str = Field(default="billing", min_length=1)
    otlp_customer_attribute: str = Field(default="enduser.id", min_length=1)
    otlp_feature_attribute: str = Field(default="billing.feature", min_length=1)
    otlp_task_attribute: str = Field(default="billing.task", min_length=1)
    # the durable log (billing.ingest_log): POST /v1/events with Prefer: respond-async publishes
    # to this NATS JetStream stream (refused, 503, while nats_url is unset)
    nats_url: str | None = None
    # webhook endpoints may point at loopback, private and link-local addresses (self-hosted
    # receivers, tests); off: refused at create/update and at each delivery (billing.alerts.targets)
    webhook_allow_private_targets: bool = False
    nats_stream: str = "usage"
    # event properties the hourly rollups keep per value besides feature (e.g. user, task)
    # (comma-separated; `billing db recount` rebuilds the rollups with them)
    rollup_dimensions: str = Field(default="", pattern=r"^[A-Za-z0-9_,\- ]*$", max_length=1000)

    # PostgreSQL: the margin report's transaction sets work_mem to this (SET LOCAL) so its wide
    # rollup aggregates hash in memory instead of spilling to temp files (the server default: 4MB)
    report_work_mem: str = Field(default="64MB", pattern=r"^[1-9][0-9]{0,6}(kB|MB|GB)$")

    def rollup_dimension_names(self) -> tuple[str, ...]:
        from billing.ledger.rollups import DEFAULT_DIMENSIONS

        extra = {n.strip() for n in self.rollup_dimensions.split(",") if n.strip()}
        return tuple(sorted(set(DEFAULT_DIMENSIONS) | extra))


@lru_cache
def get_settings() -> Settings:
    return Settings()
