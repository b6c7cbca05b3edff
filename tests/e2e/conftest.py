"""The whole stack on loopback: the API (in-process), the development sync service (its own
process, so it can be stopped and restarted) and real PowerSync SDK clients."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from papyrus.server.app import create_app
from tests.conftest import SYNC_CONFIG, LiveServer, free_port, make_settings
from tests.e2e.node_client import NODE_SDK, NodeClient


class Stack:
    def __init__(self, api: LiveServer, database_url: str, audience: str, tmp: Path) -> None:
        self.api = api
        self.api_url = api.url
        self.database_url = database_url
        self.audience = audience
        self.tmp = tmp
        self.sync_port = free_port()
        self.sync_url = f"http://127.0.0.1:{self.sync_port}"
        self.sync_proc: subprocess.Popen[bytes] | None = None
        self._clients: list[NodeClient] = []

    def start_sync(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env["LOG_LEVEL"] = "WARNING"
        self.sync_proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "papyrus.cli.main",
                "sync-service",
                "--database-url",
                self.database_url,
                "--jwks-uri",
                f"{self.api_url}/v1/auth/jwks",
                "--audience",
                self.audience,
                "--sync-config",
                str(SYNC_CONFIG),
                "--port",
                str(self.sync_port),
            ],
            env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.sync_proc.poll() is None, "sync service exited during start-up"
            try:
                if httpx.get(f"{self.sync_url}/probes/readiness", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("sync service never became ready")

    def stop_sync(self) -> None:
        if self.sync_proc is not None and self.sync_proc.poll() is None:
            self.sync_proc.send_signal(signal.SIGTERM)
            try:
                self.sync_proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.sync_proc.kill()
                self.sync_proc.wait()
        self.sync_proc = None

    def register(self, email: str) -> dict[str, Any]:
        response = httpx.post(
            f"{self.api_url}/v1/auth/register",
            json={
                "email": email,
                "password": "password-123",
                "display_name": email.split("@")[0],
                "client_type": "cli",
            },
        )
        assert response.status_code == 201, response.text
        return response.json()

    def login(self, email: str) -> dict[str, Any]:
        response = httpx.post(
            f"{self.api_url}/v1/auth/login",
            json={"email": email, "password": "password-123", "client_type": "desktop"},
        )
        assert response.status_code == 200, response.text
        return response.json()

    def upload(self, tokens: dict[str, Any], batch: list[dict[str, Any]]) -> dict[str, Any]:
        response = httpx.post(
            f"{self.api_url}/v1/sync/powersync-upload",
            json={"batch": batch},
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        )
        assert response.status_code == 200, response.text
        return response.json()

    def node_client(self, name: str, tokens: dict[str, Any]) -> NodeClient:
        # Two SDK databases with one file name in one process hang; here each has its own
        # process, and still its own name.
        client = NodeClient(self.tmp / f"node-{name}.db", self.api_url, self.sync_url, tokens)
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.stop_sync()


@contextmanager
def running_stack(tmp_path: Path, database_url: str, **overrides: Any) -> Iterator[Stack]:
    if not (NODE_SDK / "node_modules" / "@powersync" / "node").exists():
        pytest.fail("the Node SDK is not installed: run `make setup` (npm ci in node-sdk/)")
    settings = make_settings(tmp_path, database_url, **overrides)
    with LiveServer(create_app(settings)) as api:
        stack = Stack(api, database_url, settings.POWERSYNC_JWT_AUDIENCE, tmp_path)
        stack.start_sync()
        try:
            yield stack
        finally:
            stack.close()


@pytest.fixture
def stack(tmp_path: Path, database_url: str) -> Iterator[Stack]:
    with running_stack(tmp_path, database_url) as stack:
        yield stack
