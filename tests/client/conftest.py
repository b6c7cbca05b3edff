"""Fixtures for client tests: a protocol mock sync service on loopback, fast sync options."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from papyrus.client import ACCOUNT_SCHEMA, PowerSyncDatabase, Schema, SyncOptions
from tests.client.mock_sync import MockSyncService
from tests.conftest import LiveServer

if TYPE_CHECKING:
    from fastapi import FastAPI

    from papyrus.embedded_db import ServerInfo
    from papyrus.server.config import Settings
    from tests.client.stack import Stack

FAST = SyncOptions(retry_delay=0.2, crud_upload_throttle=0.05, read_timeout=30)


@pytest.fixture
def mock_sync() -> Iterator[tuple[MockSyncService, str]]:
    service = MockSyncService()
    server = LiveServer(service.app())
    with server:
        yield service, server.url
        service.down = True
        service.end_streams()


@pytest.fixture
def open_db(tmp_path: Path) -> Iterator[Callable[..., PowerSyncDatabase]]:
    opened: list[PowerSyncDatabase] = []

    def make(name: str = "client.db", schema: Schema = ACCOUNT_SCHEMA) -> PowerSyncDatabase:
        db = PowerSyncDatabase(tmp_path / name, schema)
        opened.append(db)
        return db

    yield make
    for db in opened:
        db.close()


def eventually(check: Callable[[], object], timeout: float = 15.0, interval: float = 0.05) -> None:
    """Polls `check` until it returns truthy; fails with its last value or error."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return
        except AssertionError as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


@pytest.fixture
def stack(
    app: FastAPI,
    settings: Settings,
    pg_server: ServerInfo,
    database_url: str,
    database_name: str,
    tmp_path: Path,
) -> Iterator[Stack]:
    """API + development sync service on loopback, sharing the test's database."""
    from tests.client.stack import Stack, sync_settings_for

    with LiveServer(app) as api:
        running = Stack(
            api.url,
            pg_server,
            database_name,
            sync_settings_for(
                database_url, database_name, api.url, settings.POWERSYNC_JWT_AUDIENCE
            ),
            tmp_path,
        )
        running.start_sync()
        try:
            yield running
        finally:
            running.close()
