"""A PostgreSQL outage under a running API: 503 with Retry-After, connections kept, one log
line per request, and recovery once the database is back. Uses its own embedded PostgreSQL,
stopped and started again on the same port."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from psycopg_pool import PoolTimeout

from papyrus.embedded_db import EmbeddedPostgres
from papyrus.server import hotdb, migrate
from papyrus.server.app import create_app
from tests.conftest import LiveServer, make_settings, wait_for
from tests.server.test_hostile_clients import _read_response, _Records


@pytest.fixture
def own_postgres() -> Iterator[tuple[EmbeddedPostgres, str, int]]:
    data_dir = Path(tempfile.mkdtemp(prefix="papyrus-outage-pg-"))
    server = EmbeddedPostgres(data_dir, fast=True)
    info = server.start()
    try:
        yield server, info.url(), info.port
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _restart_on(server: EmbeddedPostgres, port: int) -> None:
    """pg_ctl start on the port the API's engine knows (a plain start() picks a free one)."""
    server._pg_ctl("-w", "-t", "60", "-o", f"-p {port}", "-l", str(server._log), "start")
    server._started_here = True


class _KeepAlive:
    """Requests one after another over a single TCP connection."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))

    def send(self, method: str, path: str, body: dict | None = None, token: str = ""):
        payload = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(payload)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        self.sock.sendall(head.encode() + b"\r\n" + payload)
        return _read_response(self.sock)


def test_a_database_outage_is_503_and_the_api_recovers(
    tmp_path, own_postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgres, url, port = own_postgres
    # A checkout from the hot pools waits this long for a connection the pool cannot make
    # while the database is down (10 s in production); shorter here to keep the suite quick.
    monkeypatch.setattr(hotdb, "_CHECKOUT_TIMEOUT", 1.0)
    monkeypatch.setattr(hotdb, "_FAILING_CHECKOUT_TIMEOUT", 0.2)
    migrate.upgrade(url)
    app = create_app(make_settings(tmp_path, url))
    records = _Records()
    watched = [logging.getLogger("papyrus"), logging.getLogger("uvicorn.error")]
    for logger in watched:
        logger.addHandler(records)
    try:
        with LiveServer(app) as live:
            credentials = {
                "email": "outage@example.com",
                "password": "password-123",
                "client_type": "cli",
            }
            registered = httpx.post(
                f"{live.url}/v1/auth/register", json={**credentials, "display_name": "O"}
            )
            assert registered.status_code == 201
            token = registered.json()["access_token"]

            postgres.stop()
            conn = _KeepAlive(live.port)
            requests = [
                ("POST", "/v1/auth/login", credentials, ""),
                ("GET", "/v1/users/me", None, token),
                ("POST", "/v1/sync/powersync-upload", {"batch": []}, token),
                ("POST", "/v1/auth/refresh", {"refresh_token": "x"}, ""),
                ("POST", "/v1/auth/powersync-token", None, token),
                ("GET", "/health/ready", None, ""),
            ]
            for method, path, body, bearer in requests:
                records.records.clear()
                # The same connection every time: a reset would fail the next send.
                status, headers, answer = conn.send(method, path, body, bearer)
                assert status == 503, (path, answer)
                expected = "not_ready" if path == "/health/ready" else "service_unavailable"
                assert answer["error"]["code"] == expected
                assert int(headers["retry-after"]) > 0
                assert headers.get("connection") != "close"
                logged = [r for r in records.records if r.levelno >= logging.WARNING]
                assert len(logged) == 1, [r.getMessage() for r in logged]
                assert logged[0].exc_info is None
                assert logged[0].levelno == logging.WARNING

            pools = app.state.hot_pools
            assert pools.main.failing and pools.limits.failing  # later checkouts give up sooner

            _restart_on(postgres, port)

            def recovered() -> bool:
                # Each pool reconnects on its own schedule (it backs off while the database
                # is down), so every kind of request is waited for, not just the first.
                return (
                    conn.send("POST", "/v1/auth/login", credentials)[0] == 200
                    and conn.send("GET", "/v1/users/me", token=token)[0] == 200
                    and conn.send("GET", "/health/ready")[0] == 200
                )

            wait_for(recovered, timeout=60, what="every endpoint after the database is back")
            assert not pools.main.failing and not pools.limits.failing
            conn.sock.close()
    finally:
        for logger in watched:
            logger.removeHandler(records)


def test_a_failing_pool_gives_up_sooner_until_a_checkout_succeeds(
    pg_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a checkout timed out, the next ones wait the short timeout, not the pool's own (an
    hour here: without the rule this test would hang); a successful checkout ends that."""
    monkeypatch.setattr(hotdb, "_FAILING_CHECKOUT_TIMEOUT", 0.2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nobody = s.getsockname()[1]  # nothing listens here once the socket is closed
    up = pg_server.conninfo("postgres")
    down = up.replace(f":{pg_server.port}/", f":{nobody}/")
    assert down != up

    async def check(conninfo: str, reachable: bool) -> None:
        pool = hotdb.Pool(conninfo, min_size=1, max_size=1, open=False, timeout=3600)
        await pool.open(wait=False)
        try:
            pool.failing = True  # as after a checkout that timed out
            if reachable:
                async with pool.connection() as conn:
                    assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
                assert pool.failing is False
            else:
                for _ in range(2):
                    with pytest.raises(PoolTimeout):
                        await pool.getconn()
                    assert pool.failing is True
        finally:
            await pool.close()

    asyncio.run(check(down, reachable=False))
    asyncio.run(check(up, reachable=True))
