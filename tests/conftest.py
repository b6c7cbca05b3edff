"""Shared fixtures: one real PostgreSQL per test run, a fresh migrated database per test."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from papyrus.devsync.config import Settings as SyncSettings
from papyrus.devsync.service import DevSyncService
from papyrus.devsync.service import create_app as create_sync_app
from papyrus.embedded_db import EmbeddedPostgres, ServerInfo
from papyrus.server import migrate
from papyrus.server.app import create_app
from papyrus.server.config import Settings
from papyrus.sync_config import sync_config_path

# Parallel test workers start with COLUMNS/LINES of the terminal that launched them, and a
# `rich` console made while COLUMNS is set keeps that width for good. The command line's console
# is made once per process, so every test that runs it chooses its width in its own env.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

ROOT = Path(__file__).resolve().parents[1]
SYNC_CONFIG = sync_config_path()
TEMPLATE_DB = "papyrus_template"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[ServerInfo]:
    # Outside pytest's temp tree: a concurrent pytest run re-tightens and prunes that tree,
    # which would pull the data directory from under this server (it runs as another user).
    data_dir = Path(tempfile.mkdtemp(prefix="papyrus-test-pg-"))
    server = EmbeddedPostgres(data_dir, fast=True)
    info = server.start()
    yield info
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server: ServerInfo) -> str:
    """A database migrated once; each test gets a copy (CREATE DATABASE ... TEMPLATE)."""
    with psycopg.connect(pg_server.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}"')
        conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    migrate.upgrade(pg_server.url(TEMPLATE_DB))
    return TEMPLATE_DB


@pytest.fixture
def database_name(pg_server: ServerInfo, template_db: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield name
    with psycopg.connect(pg_server.conninfo("postgres"), autocommit=True) as conn:
        # Logical replication slots pin their database; a sync service under test may leave one.
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE database = %s AND NOT active",
            (name,),
        )
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_server: ServerInfo, database_name: str) -> str:
    return pg_server.url(database_name)


@pytest.fixture
def sql(pg_server: ServerInfo, database_name: str) -> Callable[..., list[tuple[Any, ...]]]:
    """Runs one statement directly against the test database and returns its rows."""

    def run(query: str, params: tuple[Any, ...] | dict[str, Any] | None = None) -> list[tuple]:
        with psycopg.connect(pg_server.conninfo(database_name), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    return run


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "PAPYRUS_ENV": "test",
        "DATA_DIR": tmp_path / "data",
        "DATABASE_URL": database_url,
        "ACCESS_TOKEN_SECRET": secrets.token_urlsafe(32),
        "RATE_LIMIT_AUTH_IP_PER_MINUTE": 100_000,
        "RATE_LIMIT_LOGIN_FAILURES_PER_EMAIL": 100_000,
        "RATE_LIMIT_LOGIN_FAILURES_PER_SOURCE": 100_000,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def register(
    client: TestClient,
    email: str | None = None,
    password: str = "correct horse battery",
    display_name: str = "Reader",
    client_type: str = "cli",
    **extra: Any,
) -> dict[str, Any]:
    """Registers a user through the API and returns the token response."""
    body = {
        "email": email or f"reader-{uuid.uuid4().hex[:8]}@example.com",
        "password": password,
        "display_name": display_name,
        "client_type": client_type,
        **extra,
    }
    response = client.post("/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A port for a server a test starts. Not one the kernel would pick (its ephemeral range
    starts at 32768 here): outgoing connections and other tests' `bind(0)` take those, and a
    port handed out and bound a moment later could be gone by then. Parallel workers draw from
    separate quarters of 20000-31999, and no port is given twice in one run."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    quarter = int(worker.removeprefix("gw") or 0) % 4
    low = 20000 + 3000 * quarter
    while True:
        port = random.randrange(low, low + 3000)
        if port in _PORTS_GIVEN:
            continue
        _PORTS_GIVEN.add(port)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Polls `predicate` until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def drop_replication_slot(pg: ServerInfo, slot: str) -> None:
    """Drops `slot` once no sync service holds it any more (it lets go a moment after stopping)."""
    with psycopg.connect(pg.conninfo("postgres"), autocommit=True) as conn:
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


class LiveServer:
    """An ASGI app served by a real uvicorn on loopback, in a background thread."""

    def __init__(self, app: Any, port: int | None = None, lifespan: str = "auto") -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # proxy_headers off, as `papyrus serve` runs it: the app decides whom to believe.
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan=lifespan,
            proxy_headers=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), 20, "server start")
        if not self.thread.is_alive():
            raise RuntimeError("live server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


class SyncServer:
    """The development sync service on loopback, in a background thread, until `stop()`."""

    def __init__(self, settings: SyncSettings) -> None:
        self.settings = settings
        self.service = DevSyncService(settings)
        # lifespan "on": a service that fails to start fails the test instead of serving anyway.
        self.live = LiveServer(
            create_sync_app(settings, self.service), port=settings.port, lifespan="on"
        )
        self.url = self.live.url

    def start(self) -> SyncServer:
        self.live.__enter__()
        service = self.service
        wait_for(
            lambda: service.ready is not None and service.ready.is_set(), 30, "sync service ready"
        )
        return self

    def stop(self) -> None:
        loop = self.service.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.service.begin_shutdown)  # ends open streams
        self.live.__exit__()


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[LiveServer]:
    with LiveServer(app) as server:
        yield server
