"""The whole stack on loopback: the Papyrus API and the development sync service, one database.

The sync service verifies PowerSync tokens against the API's JWKS and replicates the API's
`books` table through the `powersync` publication, exactly as in `papyrus dev`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from papyrus.client import AuthProvider, PapyrusApiConfig, SyncOptions
from papyrus.devsync.config import Settings as SyncSettings
from papyrus.embedded_db import ServerInfo
from tests.conftest import SYNC_CONFIG, SyncServer, drop_replication_slot, free_port

STACK_SYNC = SyncOptions(retry_delay=0.3, crud_upload_throttle=0.05, read_timeout=60)


@dataclass
class Stack:
    api_url: str
    pg: ServerInfo
    database_name: str
    sync_settings: SyncSettings
    tmp_path: Path
    sync: SyncServer | None = None
    providers: list[AuthProvider] = field(default_factory=list)

    @property
    def sync_url(self) -> str:
        return f"http://127.0.0.1:{self.sync_settings.port}"

    def start_sync(self) -> None:
        self.sync = SyncServer(self.sync_settings).start()

    def stop_sync(self) -> None:
        if self.sync is not None:
            self.sync.stop()
            self.sync = None

    def config(self, name: str, **overrides: Any) -> PapyrusApiConfig:
        values: dict[str, Any] = {
            "api_url": self.api_url,
            "powersync_url": self.sync_url,
            "data_dir": self.tmp_path / "clients" / name,
            "token_store": "file",
            "device_label": name,
        }
        values.update(overrides)
        return PapyrusApiConfig(**values)

    def client(self, name: str, **kwargs: Any) -> AuthProvider:
        """An AuthProvider with its own data directory (one device)."""
        kwargs.setdefault("sync_options", STACK_SYNC)
        provider = AuthProvider(self.config(name), **kwargs)
        self.providers.append(provider)
        return provider

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.pg.conninfo(self.database_name), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def close(self) -> None:
        for provider in self.providers:
            provider.close()
        self.stop_sync()
        drop_replication_slot(self.pg, self.sync_settings.slot_name)


def sync_settings_for(
    database_url: str, database_name: str, api_url: str, audience: str
) -> SyncSettings:
    return SyncSettings(
        database_url=database_url,
        jwks_uri=f"{api_url}/v1/auth/jwks",
        audiences=(audience,),
        sync_config_path=SYNC_CONFIG,
        slot_name=f"slot_{database_name}",
        port=free_port(),
    )
