"""Fixtures: a real PostgreSQL (embedded), a books database per test, signed JWTs, a JWKS
server and the development sync service running under uvicorn on loopback."""

from __future__ import annotations

import itertools
import json
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa

from papyrus.devsync.config import Settings
from papyrus.devsync.replication import Replicator
from papyrus.devsync.service import DevSyncService, create_app
from papyrus.devsync.sync_rules import SyncConfig, load_sync_config
from papyrus.embedded_db import EmbeddedPostgres, ServerInfo

REPO = Path(__file__).resolve().parents[2]
SYNC_CONFIG = REPO / "server" / "powersync" / "sync-config.yaml"
# Lines recorded from the real PowerSync service (a copy of shared/docs/powersync-captures).
CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "powersync-captures"
AUDIENCE = "powersync-dev"

BOOKS_DDL = """
CREATE TABLE books (
    id uuid PRIMARY KEY,
    owner_user_id uuid NOT NULL,
    title text NOT NULL,
    subtitle text,
    author text,
    co_authors jsonb,
    isbn text,
    isbn13 text,
    publisher text,
    language text,
    page_count integer,
    description text,
    cover_image_url text,
    reading_status text,
    current_page integer,
    current_position double precision,
    current_cfi text,
    is_favorite boolean NOT NULL DEFAULT false,
    rating smallint,
    custom_metadata jsonb,
    added_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE PUBLICATION powersync FOR TABLE books;
"""

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg() -> Iterator[ServerInfo]:
    # Not under pytest's basetemp: concurrent pytest runs on this machine prune old
    # basetemp directories, which would pull the cluster out from under us.
    data_dir = Path(tempfile.mkdtemp(prefix="devsync-pg-"))
    server = EmbeddedPostgres(data_dir, fast=True)
    try:
        info = server.start()
        yield info
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@dataclass
class SourceDb:
    """A fresh database with the books table and the `powersync` publication."""

    info: ServerInfo
    name: str
    conninfo: str
    slot_name: str

    def execute(self, query: str, params: Any = None) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(query, params)

    def fetchall(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def insert_book(self, owner: str, title: str, book_id: str | None = None, **cols: Any) -> str:
        book_id = book_id or str(uuid.uuid4())
        names = ["id", "owner_user_id", "title", *cols]
        placeholders = ", ".join(["%s"] * len(names))
        self.execute(
            f"INSERT INTO books ({', '.join(names)}) VALUES ({placeholders})",
            [book_id, owner, title, *cols.values()],
        )
        return book_id

    def ops(self) -> list[tuple[Any, ...]]:
        return self.fetchall(
            "SELECT op_id, bucket, op, object_id, subkey, data, checksum"
            " FROM powersync_dev.ops ORDER BY op_id"
        )

    def state(self) -> tuple[Any, ...]:
        return self.fetchall(
            "SELECT last_op_id, lsn::text, snapshot_done FROM powersync_dev.state"
        )[0]


@pytest.fixture
def source_db(pg: ServerInfo) -> Iterator[SourceDb]:
    name = f"devsync_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        # The fast cluster commits asynchronously; WAL then reaches logical decoding only
        # with the WAL writer's next round (up to 200 ms). Real deployments commit
        # synchronously, so measure with that.
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    db = SourceDb(pg, name, pg.conninfo(name), f"slot_{name}")
    db.execute(BOOKS_DDL)
    yield db
    with psycopg.connect(pg.conninfo("postgres"), autocommit=True) as conn:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            active = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (db.slot_name,)
            ).fetchone()
            if active is None:
                break
            if not active[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (db.slot_name,))
                break
            time.sleep(0.05)
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@dataclass
class RunningReplicator:
    replicator: Replicator
    db: SourceDb

    def wait_ready(self) -> None:
        wait_for(lambda: self.replicator.status.ready, 20, "replication ready")

    def sync(self) -> None:
        """Wait until everything committed so far in the source is in storage."""
        with psycopg.connect(self.db.conninfo, autocommit=True) as conn:
            target = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
            conn.execute("SELECT pg_logical_emit_message(false, 'powersync', 'ping')")

        def caught_up() -> bool:
            rows = self.db.fetchall("SELECT lsn >= %s::pg_lsn FROM powersync_dev.state", (target,))
            return bool(rows and rows[0][0])

        wait_for(caught_up, 20, "replication to catch up")

    def stop(self) -> None:
        self.replicator.stop()


@pytest.fixture
def start_replicator(source_db: SourceDb) -> Iterator[Callable[..., RunningReplicator]]:
    running: list[RunningReplicator] = []

    def start(rules: SyncConfig | None = None, **kwargs: Any) -> RunningReplicator:
        replicator = Replicator(
            source_db.conninfo,
            rules or load_sync_config(SYNC_CONFIG),
            slot_name=source_db.slot_name,
            **kwargs,
        )
        replicator.start()
        handle = RunningReplicator(replicator, source_db)
        running.append(handle)
        handle.wait_ready()
        return handle

    yield start
    for handle in running:
        handle.stop()


# -- JWT signing and JWKS -------------------------------------------------------------------


@dataclass
class Signer:
    """Signs RS256 tokens; its JWKS is served over HTTP so rotation can be tested."""

    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    jwks_requests: int = 0

    def add_key(self) -> str:
        kid = f"k{len(self.keys) + 1}"
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
            keys.append(jwk)
        return {"keys": keys}

    def token(
        self,
        sub: str,
        *,
        expires_in: float = 3600,
        aud: str | None = AUDIENCE,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        kid = kid or next(iter(self.keys))
        now = time.time()
        payload: dict[str, Any] = {"sub": sub, "iat": int(now), "exp": now + expires_in}
        if aud is not None:
            payload["aud"] = aud
        payload.update(claims)
        return jwt.encode(payload, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="session")
def signer_session() -> Signer:
    signer = Signer()
    signer.add_key()
    return signer


@pytest.fixture(scope="session")
def jwks_server(signer_session: Signer) -> Iterator[str]:
    signer = signer_session

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            signer.jwks_requests += 1
            body = json.dumps(signer.jwks()).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningService:
    url: str
    service: DevSyncService
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        if self.service.loop is not None and not self.service.loop.is_closed():
            self.service.loop.call_soon_threadsafe(self.service.begin_shutdown)
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture
def start_service(source_db: SourceDb, jwks_server: str) -> Iterator[Callable[..., RunningService]]:
    running: list[RunningService] = []

    def start(**overrides: Any) -> RunningService:
        values: dict[str, Any] = {
            "database_url": source_db.conninfo,
            "jwks_uri": jwks_server,
            "audiences": (AUDIENCE,),
            "sync_config_path": SYNC_CONFIG,
            "slot_name": source_db.slot_name,
            "port": _free_port(),
        }
        values.update(overrides)
        settings = Settings(**values)
        service = DevSyncService(settings)
        app = create_app(settings, service)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=settings.port, log_level="warning", lifespan="on"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started, 20, "uvicorn start")
        handle = RunningService(f"http://127.0.0.1:{settings.port}", service, server, thread)
        running.append(handle)
        wait_for(lambda: service.ready is not None and service.ready.is_set(), 20, "service ready")
        return handle

    yield start
    for handle in running:
        handle.stop()
