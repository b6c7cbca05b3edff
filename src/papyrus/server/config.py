"""Server settings, read from the environment and an optional `.env` file.

Production (`PAPYRUS_ENV=production`) fails closed: every secret must be given. In development,
missing secrets are generated once and kept under the data directory, never in the repository.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    PAPYRUS_ENV: Literal["development", "production", "test"] = "development"
    DATA_DIR: Path = Path(".local")
    DATABASE_URL: str | None = None
    PUBLIC_BASE_URL: str = "http://localhost:8080"
    LOG_LEVEL: str = "INFO"

    ACCESS_TOKEN_SECRET: SecretStr | None = None
    ACCESS_TOKEN_TTL_SECONDS: int = Field(default=900, ge=30, le=86400)
    REFRESH_TOKEN_TTL_DAYS: int = Field(default=30, ge=1, le=365)

    RATE_LIMIT_AUTH_IP_PER_MINUTE: int = Field(default=60, ge=1)
    RATE_LIMIT_LOGIN_FAILURES_PER_EMAIL: int = Field(default=10, ge=1)
    RATE_LIMIT_LOGIN_FAILURE_WINDOW_SECONDS: int = Field(default=900, ge=1)

    @field_validator("DATABASE_URL")
    @classmethod
    def _use_psycopg_driver(cls, value: str | None) -> str | None:
        if not value:
            return None
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @model_validator(mode="after")
    def _enforce_production_secrets(self) -> Settings:
        if self.PAPYRUS_ENV != "production":
            return self
        missing = [name for name in self.required_in_production() if not getattr(self, name)]
        if missing:
            raise ValueError(
                "production start refused, missing settings: "
                + ", ".join(missing)
                + " (see .env.example)"
            )
        return self

    @staticmethod
    def required_in_production() -> list[str]:
        return ["DATABASE_URL", "ACCESS_TOKEN_SECRET"]

    @property
    def is_production(self) -> bool:
        return self.PAPYRUS_ENV == "production"

    @cached_property
    def access_token_secret(self) -> str:
        if self.ACCESS_TOKEN_SECRET:
            return self.ACCESS_TOKEN_SECRET.get_secret_value()
        return dev_secret(self.DATA_DIR, "access-token-secret")

    def database_url(self) -> str:
        if not self.DATABASE_URL:
            raise RuntimeError("DATABASE_URL is not resolved; start the embedded database first")
        return self.DATABASE_URL


def dev_secret(data_dir: Path, name: str, nbytes: int = 32) -> str:
    """A development secret generated on first use and kept (0600) under the data dir."""
    path = Path(data_dir) / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker won the race
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(nbytes))
    return path.read_text().strip()
