"""Settings from the environment (``BILLING_*``), via pydantic-settings."""

from __future__ import annotations

from functools import lru_cache

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore")

    database_url: str = "sqlite:///billing.db"
    plans_dir: str = "plans"
    # events may be at most this far ahead of the ingesting server's clock
    future_tolerance_seconds: int = 300
    # cost data files layered over the shipped cost book: a directory of *.yaml files, or
    # files separated by os.pathsep or commas (billing.ledger.cost_prices)
    costs: str | None = None
    stripe_api_key: SecretStr | None = None
    stripe_api_base: str | None = None
    stripe_webhook_secret: SecretStr | None = None


@lru_cache
def get_settings() -> Settings:
    return Settings()
