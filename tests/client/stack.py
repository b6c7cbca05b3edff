"""The whole stack on loopback: the Papyrus API and the development sync service, one database.

The sync service verifies PowerSync tokens against the API's JWKS and replicates the API's
`books` table through the `powersync` publication, exactly as in `papyrus dev`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import uvicorn

from papyrus.client import AuthProvider, PapyrusApiConfig, SyncOptions
from papyrus.devsync.config import Settings as SyncSettings
from papyrus.devsync.service import DevSyncService, create_app
from papyrus.embedded_db import ServerInfo
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
SYNC_CONFIG = REPO / "server" / "powersync" / "sync-config.yaml"
STACK_SYNC = SyncOptions(retry_delay=0.3, crud_upload_throttle=0.05, read_timeout=60)


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class SyncServer:
    settings: SyncSettings
    service: DevSyncService
    server: uvicorn.Server
    thread: threading.Thread

    @classmethod
    def start(cls, settings: SyncSettings) -> SyncServer:
        service = DevSyncService(settings)
        app = create_app(settings, service)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=settings.port, log_level="warning", lifespan="on"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        _wait(lambda: server.started or not thread.is_alive(), 20, "sync service start")
        assert thread.is_alive(), "the sync service did not start"
        _wait(lambda: service.ready is not None and service.ready.is_set(), 30, "sync ready")
        return cls(settings, service, server, thread)

    def stop(self) -> None:
        loop = self.service.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.service.begin_shutdown)
        self.server.should_exit = True
        self.thread.join(20)


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
        self.sync = SyncServer.start(self.sync_settings)

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
        self._drop_slot()

    def _drop_slot(self) -> None:
        slot = self.sync_settings.slot_name
        with psycopg.connect(self.pg.conninfo("postgres"), autocommit=True) as conn:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
                ).fetchone()
                if row is None:
                    return
                if not row[0]:
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    return
                time.sleep(0.05)


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
