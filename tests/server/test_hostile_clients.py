"""Clients that stall, flood or vanish, against a real server on loopback (raw sockets)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import IO, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from papyrus.server.app import create_app
from papyrus.server.middleware import DEFAULT_MAX_BODY_BYTES
from papyrus.server.sync.validation import MAX_BODY_BYTES
from tests.conftest import LiveServer, make_settings, wait_for

UPLOAD = "/v1/sync/powersync-upload"
# More than the SQLAlchemy pool that request sessions draw from can hand out (20 connections;
# the psycopg pools in `server/hotdb.py` hold another 10 for token checks and 5 for limits).
STALLED = 30


def _register(base: str, email: str = "hostile@example.com") -> dict:
    body = {"email": email, "password": "password-123", "display_name": "H", "client_type": "cli"}
    response = httpx.post(f"{base}/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def _open(port: int, head: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head.encode() + b"\r\n" + body)
    return sock


def _upload_head(token: str, length: int) -> str:
    return (
        f"POST {UPLOAD} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
    )


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], dict]:
    """One whole response (headers, then a Content-Length body)."""
    sock.settimeout(60)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the response body"
        rest += chunk
    return int(lines[0].split()[1]), headers, json.loads(rest[:length]) if length else {}


@pytest.fixture
def server(tmp_path, database_url) -> Iterator[LiveServer]:
    with LiveServer(create_app(make_settings(tmp_path, database_url))) as live:
        yield live


def _requests_in_flight(live: LiveServer) -> int:
    return len(live.server.server_state.tasks)


def test_stalled_upload_bodies_hold_no_database_connection(server, sql) -> None:
    token = _register(server.url)["access_token"]
    stalled = [
        _open(server.port, _upload_head(token, 1000), b'{"batch": [') for _ in range(STALLED)
    ]
    try:
        wait_for(lambda: _requests_in_flight(server) >= STALLED, what="stalled requests accepted")
        login = httpx.post(
            f"{server.url}/v1/auth/login",
            json={"email": "hostile@example.com", "password": "password-123", "client_type": "cli"},
            timeout=60,
        )
        assert login.status_code == 200, login.text
        assert httpx.get(f"{server.url}/health/ready", timeout=60).status_code == 200
        idle_in_transaction = sql(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
        )
        assert idle_in_transaction == [(0,)]
        # Still waiting for their bodies, not answered: the server is not cutting corners.
        assert _requests_in_flight(server) >= STALLED
    finally:
        for sock in stalled:
            sock.close()


T = TypeVar("T")


class _SendWatch:
    """Wraps the app to count response `send` calls in progress, and to look at them from
    inside the server's event loop: a send counted there, between task steps, is suspended,
    i.e. waiting for the client to read."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.sending = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.loop = asyncio.get_running_loop()

        async def watched(message: Message) -> None:
            self.sending += 1
            try:
                await send(message)
            finally:
                self.sending -= 1

        await self.app(scope, receive, watched)

    def look(self, probe: Callable[[], T]) -> T:
        async def run() -> T:
            return probe()

        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=60)


def test_a_client_that_does_not_read_responses_holds_no_database_connection(
    tmp_path, database_url, sql
) -> None:
    """Pipelined requests whose large responses are never read: the server ends up waiting on
    the network in the middle of answering one, and by then its session must be closed (the
    session dependency's scope="function")."""
    app = create_app(make_settings(tmp_path, database_url))
    watch = _SendWatch(app)
    with LiveServer(watch) as live:
        registered = _register(live.url)
        # 200 rejections of 2000 characters: each page of them is about half a megabyte.
        sql(
            "INSERT INTO sync_rejections (user_id, upload_id, code, message)"
            " SELECT %s, gen_random_uuid(), 'conflict', repeat('m', 2000)"
            " FROM generate_series(1, 200)",
            (registered["user"]["id"],),
        )
        request = (
            f"GET /v1/sync/rejections?limit=200 HTTP/1.1\r\nHost: test\r\n"
            f"Authorization: Bearer {registered['access_token']}\r\n\r\n"
        ).encode()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", live.port))
        try:
            # ~11 MB of answers: more than the kernel's buffers and uvicorn's write buffer hold.
            sock.sendall(request * 24)

            def stuck() -> tuple[int] | None:
                """The connections checked out, once a send is suspended (else None)."""
                return (app.state.engine.pool.checkedout(),) if watch.sending else None

            (checked_out,) = wait_for(
                lambda: watch.look(stuck), 60, "the server waiting for the client to read"
            )
            assert checked_out == 0
            held = sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state <> 'idle'"
            )
            assert held == [(0,)]
            assert watch.look(lambda: watch.sending) > 0  # still stuck while we looked
            # Reading resumes it: every answer arrives whole (and the socket closes cleanly).
            sock.settimeout(60)
            with sock.makefile("rb") as stream:
                for _ in range(24):
                    status, body = _read_pipelined(stream)
                    assert status == 200
                    assert len(json.loads(body)["rejections"]) == 200
        finally:
            sock.close()


def _read_pipelined(stream: IO[bytes]) -> tuple[int, bytes]:
    """The next response of several on one connection (a Content-Length body)."""
    status = int(stream.readline().split()[1])
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, stream.read(length)


def test_a_body_that_does_not_arrive_in_time_is_408(tmp_path, database_url) -> None:
    settings = make_settings(tmp_path, database_url, REQUEST_BODY_TIMEOUT_SECONDS=0.5)
    with LiveServer(create_app(settings)) as live:
        token = _register(live.url)["access_token"]
        sock = _open(live.port, _upload_head(token, 1000), b'{"batch": [')
        try:
            status, headers, body = _read_response(sock)
        finally:
            sock.close()
    assert status == 408
    assert body["error"]["code"] == "request_timeout"
    assert headers["connection"] == "close"


@pytest.mark.parametrize(
    ("path", "limit"),
    [("/v1/auth/login", DEFAULT_MAX_BODY_BYTES), (UPLOAD, MAX_BODY_BYTES)],
)
def test_a_declared_oversized_body_is_refused_before_it_is_sent(server, path, limit) -> None:
    """200 MB announced, nothing sent: the answer comes from Content-Length alone."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {200 * 1024 * 1024}\r\n"
    )
    sock = _open(server.port, head)
    try:
        status, headers, body = _read_response(sock)
    finally:
        sock.close()
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"
    assert body["error"]["details"] == {"max_bytes": limit}
    assert headers["connection"] == "close"


def _chunks(total: int) -> Iterator[bytes]:
    yield b'{"email": "a@b.co", "password": "'
    for _ in range(total // 4096):
        yield b"x" * 4096
    yield b'", "client_type": "cli"}'


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/auth/register"),
        ("POST", "/v1/auth/login"),
        ("POST", "/v1/auth/refresh"),
        ("PATCH", "/v1/users/me"),
        ("POST", "/v1/auth/logout"),
        ("POST", "/v1/auth/exchange-code"),
        ("POST", "/v1/auth/link/google/complete"),
        ("GET", "/health"),
    ],
)
def test_every_endpoint_caps_chunked_bodies(client: TestClient, sql, method, path) -> None:
    """No Content-Length (chunked): counted while reading, refused past the cap."""
    response = client.request(
        method,
        path,
        content=_chunks(DEFAULT_MAX_BODY_BYTES + 8192),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert sql("SELECT count(*) FROM users") == [(0,)]


def test_bodies_under_the_cap_still_work_chunked(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"email": "chunked@example.com", "password": "password-123", '
        yield b'"display_name": "C", "client_type": "cli"}'

    response = client.post(
        "/v1/auth/register", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_logs() -> Iterator[_Records]:
    """Every record from the application and from uvicorn (which does not propagate)."""
    handler = _Records()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn.error")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_client_vanishing_mid_upload_is_not_an_error(server, server_logs, sql) -> None:
    token = _register(server.url)["access_token"]
    sock = _open(server.port, _upload_head(token, 5000), b'{"batch": [{"op": "PUT", ')
    wait_for(lambda: _requests_in_flight(server) >= 1, what="upload accepted")
    sock.close()
    wait_for(
        lambda: any("went away" in r.getMessage() for r in server_logs.records),
        what="the disconnect noticed",
    )
    errors = [r for r in server_logs.records if r.levelno >= logging.ERROR]
    assert errors == []
    assert all(r.exc_info is None for r in server_logs.records)
    assert sql("SELECT count(*) FROM books") == [(0,)]


def test_the_upload_body_is_described_in_the_openapi_schema(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    body = schema["paths"][UPLOAD]["post"]["requestBody"]
    assert body["required"] is True
    ref = body["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/UploadRequest"
    components = schema["components"]["schemas"]
    batch = components["UploadRequest"]["properties"]["batch"]
    assert batch["items"] == {"$ref": "#/components/schemas/CrudEntry"}
    entry = components["CrudEntry"]
    assert {"op", "type", "id", "op_id", "tx_id", "data"} <= set(entry["properties"])
    assert set(entry["required"]) == {"op", "type", "id"}
