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
    # the API refuses request bodies over this many bytes (413), on every route, before
    # parsing or authentication
    max_request_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    # how long an API server trusts a key it looked up; a key revoked elsewhere (the CLI,
    # another server) stops working within this time, at once on the server that revoked it
    key_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    stripe_api_key: SecretStr | None = None
    stripe_api_base: str | None = None
    stripe_webhook_secret: SecretStr | None = None


@lru_cache
def get_settings() -> Settings:
    return Settings()
