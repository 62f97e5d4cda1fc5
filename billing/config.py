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
    # the durable log (billing.ingest_log): POST /v1/events with Prefer: respond-async publishes
    # to this NATS JetStream stream (refused, 503, while nats_url is unset)
    nats_url: str | None = None
    nats_stream: str = "usage"


@lru_cache
def get_settings() -> Settings:
    return Settings()
