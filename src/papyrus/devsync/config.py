"""Settings of the development sync service."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from papyrus.sync_config import sync_config_path

# The packaged file (what the real service reads), wherever the command is started from.
DEFAULT_SYNC_CONFIG = sync_config_path()


def plain_conninfo(url: str) -> str:
    """Accept SQLAlchemy-style URLs (`postgresql+psycopg://`) as well as libpq ones."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


@dataclass(frozen=True)
class Settings:
    """Everything the service needs; `from_env` reads the same names the real stack uses."""

    database_url: str
    jwks_uri: str
    audiences: tuple[str, ...] = ("powersync",)
    sync_config_path: Path = DEFAULT_SYNC_CONFIG
    host: str = "127.0.0.1"
    port: int = 8081
    schema: str = "powersync_dev"
    slot_name: str = "powersync_dev"
    publication: str = "powersync"
    token_max_lifetime: int = 86400
    keepalive_interval: float = 20.0
    expiry_warning: float = 20.0
    data_chunk_ops: int = 1000
    compact_every_ops: int = 50_000
    compact_interval: float = 300.0

    @property
    def conninfo(self) -> str:
        return plain_conninfo(self.database_url)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Read DATABASE_URL, POWERSYNC_JWKS_URI, POWERSYNC_JWT_AUDIENCE (comma separated) and
        POWERSYNC_SYNC_CONFIG; keyword arguments that are not None win."""
        env = os.environ
        values: dict[str, Any] = {}  # the constructor refuses unknown names
        if "DATABASE_URL" in env:
            values["database_url"] = env["DATABASE_URL"]
        if "POWERSYNC_JWKS_URI" in env:
            values["jwks_uri"] = env["POWERSYNC_JWKS_URI"]
        if "POWERSYNC_JWT_AUDIENCE" in env:
            values["audiences"] = tuple(
                a.strip() for a in env["POWERSYNC_JWT_AUDIENCE"].split(",") if a.strip()
            )
        if "POWERSYNC_SYNC_CONFIG" in env:
            values["sync_config_path"] = Path(env["POWERSYNC_SYNC_CONFIG"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        missing = [k for k in ("database_url", "jwks_uri") if k not in values]
        if missing:
            raise ValueError(f"missing settings: {', '.join(missing)}")
        return cls(**values)
