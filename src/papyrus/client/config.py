"""Where the client finds its servers and keeps its files."""

from __future__ import annotations

import os
import sys
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from papyrus.client.errors import ConfigurationError

TokenStoreKind = Literal["auto", "keyring", "file"]

DEFAULT_API_URL = "http://localhost:8080"
DEFAULT_POWERSYNC_URL = "http://localhost:8081"


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The per-user data directory: XDG on Linux, Application Support on macOS."""
    env = os.environ if env is None else env
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "papyrus"
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "papyrus"


@dataclass(frozen=True)
class PapyrusApiConfig:
    """Everything the client needs to know about its environment.

    Build it with `from_environment()` in apps and the CLI; tests construct it directly.
    """

    api_url: str = DEFAULT_API_URL
    powersync_url: str = DEFAULT_POWERSYNC_URL
    data_dir: Path = field(default_factory=default_data_dir)
    core_extension_path: Path | None = None
    token_store: TokenStoreKind = "auto"
    client_type: str = "cli"
    device_label: str | None = None

    def __post_init__(self) -> None:
        # The PowerSync SDKs reject endpoints ending in "/"; normalising here avoids "//v1".
        object.__setattr__(self, "api_url", self.api_url.rstrip("/"))
        object.__setattr__(self, "powersync_url", self.powersync_url.rstrip("/"))
        object.__setattr__(self, "data_dir", Path(self.data_dir))

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> PapyrusApiConfig:
        """Reads `PAPYRUS_API_URL`, `POWERSYNC_SERVICE_URL`, `PAPYRUS_CLIENT_DIR`,
        `POWERSYNC_CORE_PATH`, `PAPYRUS_TOKEN_STORE` and `PAPYRUS_DEVICE_LABEL`."""
        env = os.environ if env is None else env
        store = env.get("PAPYRUS_TOKEN_STORE", "auto").strip().lower() or "auto"
        if store not in ("auto", "keyring", "file"):
            raise ConfigurationError(
                f"PAPYRUS_TOKEN_STORE must be one of auto, keyring, file (it is {store!r})"
            )
        core = env.get("POWERSYNC_CORE_PATH")
        data_dir = env.get("PAPYRUS_CLIENT_DIR")
        return cls(
            api_url=_http_url(env, "PAPYRUS_API_URL", DEFAULT_API_URL),
            powersync_url=_http_url(env, "POWERSYNC_SERVICE_URL", DEFAULT_POWERSYNC_URL),
            data_dir=Path(data_dir).expanduser() if data_dir else default_data_dir(env),
            core_extension_path=Path(core).expanduser() if core else None,
            token_store=cast(TokenStoreKind, store),  # one of them: checked above
            device_label=env.get("PAPYRUS_DEVICE_LABEL") or None,
        )

    @property
    def guest_database_path(self) -> Path:
        return self.data_dir / "papyrus-guest.db"

    @property
    def account_database_path(self) -> Path:
        return self.data_dir / "papyrus-account.db"


def _http_url(env: Mapping[str, str], name: str, default: str) -> str:
    """The variable's value if it is a usable http(s) URL; a clear error otherwise (a missing
    scheme, as in `localhost:8080`, is the usual slip)."""
    value = (env.get(name) or "").strip() or default
    try:
        url = urllib.parse.urlsplit(value)
        # `port` raises for a port that is not a number in range
        valid = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise ConfigurationError(
            f"{name} must be an http:// or https:// URL such as {default} (it is {value!r})"
        )
    return value
